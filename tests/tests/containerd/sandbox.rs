//! The containerd sandbox (see the diagram in containerd.rs): pid 1, containerd, ctr runs,
//! the state a run may leave and how it is judged, and the cleanup that runs even on panic.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netns_fixtures::{Outside, TestHost};
use serde_json::Value;

use crate::clients::{self, Done, REFERENCE_DIR, assert_links_cleared, files, leases, rules_left};
use crate::{
    BRIDGE, COMMAND_TIMEOUT, GATEWAY, IMAGE, NETWORK, OUTSIDE_PAGE, OUTSIDE_PORT, PAGE, PLUGINS,
    SUBNET_PREFIX, image,
};

/// containerd and ctr in their own throwaway host: network namespace, private mount and pid
/// namespaces.
pub struct Sandbox {
    pub host: TestHost,
    pub outside: Outside,
    /// `unshare`, whose child (bash) is pid 1 of the sandbox and the parent of containerd.
    pub init: Child,
    /// Our end of the init's stdin: when it closes (drop, or this process dies) init stops
    /// containerd and exits, and the kernel kills every process left in the pid namespace.
    pub lifeline: Option<ChildStdin>,
    /// The containerd namespace: containers' cgroups are `/<namespace>/<id>`.
    pub namespace: String,
    pub plugin_dir: PathBuf,
    /// Children run in the outside namespace (its HTTP server), killed on drop.
    pub outside_procs: std::cell::RefCell<Vec<Child>>,
    pub runs: AtomicUsize,
}

/// pid 1 of the sandbox. `$1` plugin dir, `$2` conflist dir, `$3` containerd config, `$4` its
/// log, `$5` "hide" to hide the reference plugins.
const INIT: &str = r#"
set -eu
mount -t tmpfs -o mode=0755 tether-run /run
mount -t tmpfs tether-varlib /var/lib
mount -t tmpfs -o mode=0755 tether-opt /opt
mkdir -p /opt/cni/bin
mount --bind "$1" /opt/cni/bin
mount --bind "$2" /etc/cni/net.d
if [ "$5" = hide ]; then mount -t tmpfs -o ro tether-hidden /usr/lib/cni; fi
containerd --config "$3" >"$4" 2>&1 &
containerd=$!
echo ready
# bash, as pid 1, reaps the orphans (shims double-fork) while it waits for EOF.
while read -r _; do :; done
kill -TERM "$containerd"
wait "$containerd" || true
"#;

impl Sandbox {
    pub fn new(plugin_dir: &Path, conflist: &Value) -> Sandbox {
        require_containerd();
        clients::require_plugins(plugin_dir, PLUGINS);
        assert!(
            Path::new("/etc/cni/net.d").is_dir(),
            "/etc/cni/net.d is missing (podman's package creates it); the test bind-mounts its \
             own conflist dir there"
        );
        static SANDBOXES: AtomicUsize = AtomicUsize::new(0);
        let namespace = format!(
            "tether-test-{}-{}",
            std::process::id(),
            SANDBOXES.fetch_add(1, Ordering::Relaxed)
        );
        let host = TestHost::new();
        let outside = host.add_outside();
        let dir = host.dir().to_path_buf();
        let net_d = dir.join("net.d");
        std::fs::create_dir_all(&net_d).unwrap();
        std::fs::write(net_d.join("10-ctrnet.conflist"), conflist.to_string()).unwrap();
        let p = |name: &str| dir.join(name).display().to_string();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\n\
                 root = \"{}\"\nstate = \"{}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\", \
                 \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \
                 \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.aufs\", \
                 \"io.containerd.snapshotter.v1.overlayfs\"]\n\
                 [grpc]\naddress = \"{}\"\n\
                 [ttrpc]\naddress = \"{}\"\n\
                 [debug]\naddress = \"{}\"\n\
                 [metrics]\naddress = \"\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\npath = \"{}\"\n",
                p("root"),
                p("state"),
                p("containerd.sock"),
                p("containerd.ttrpc.sock"),
                p("containerd.debug.sock"),
                p("opt"),
            ),
        )
        .unwrap();

        let hide = if plugin_dir == Path::new(REFERENCE_DIR) {
            "keep"
        } else {
            "hide"
        };
        let init_err = dir.join("init.stderr");
        let (config, log) = (dir.join("config.toml"), dir.join("containerd.log"));
        let init_args: [&OsStr; 6] = [
            "tether-containerd-init".as_ref(),
            plugin_dir.as_os_str(),
            net_d.as_os_str(),
            config.as_os_str(),
            log.as_os_str(),
            hide.as_ref(),
        ];
        let (init, lifeline, line) = clients::spawn_sandbox_init(&host, INIT, init_args, &init_err);
        let sb = Sandbox {
            host,
            outside,
            init,
            lifeline,
            namespace,
            plugin_dir: plugin_dir.to_path_buf(),
            outside_procs: Default::default(),
            runs: AtomicUsize::new(0),
        };
        clients::assert_sandbox_ready(&line, &init_err);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sb.dir().join("containerd.sock").exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                std::fs::read_to_string(sb.dir().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sb.ctr(&["image", "import", sb.image_tar().to_str().unwrap()]);
        // containerd serves on its unix sockets only (the CRI plugin, which would listen on
        // TCP for streaming, is disabled), and even that inside the throwaway host.
        for table in ["tcp", "tcp6"] {
            let path = format!("/proc/{}/net/{table}", sb.init.id());
            let text = std::fs::read_to_string(&path).unwrap();
            let listening: Vec<&str> = text
                .lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
                .collect();
            assert!(
                listening.is_empty(),
                "something listens on TCP: {listening:?}"
            );
        }
        sb
    }

    pub fn dir(&self) -> &Path {
        self.host.dir()
    }

    /// A path as seen inside the sandbox's mount namespace.
    pub fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.init.id()))
    }

    /// `ctr -a <sock> -n <namespace> args`, inside the sandbox, not waited for.
    pub fn spawn_ctr(&self, args: &[&str]) -> Running {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        // nsenter forks after joining the pid namespace, so ctr's /proc/<task pid> is right.
        let mut cmd = clients::nsenter(self.init.id());
        cmd.args(["--", "ctr", "-a"])
            .arg(self.dir().join("containerd.sock"))
            .args(["-n", &self.namespace])
            // Plain copies under the private root: no overlayfs (which fails when the temp dir
            // is itself on overlayfs, as in a container) and no mounts outside the sandbox.
            .env("CONTAINERD_SNAPSHOTTER", "native")
            .args(args);
        // Files, not pipes: the shims outlive ctr and may hold inherited pipes.
        self.spawn_with_output_files(n, &mut cmd, Stdio::null(), args.join(" "))
    }

    /// `argv` inside the sandbox with only `env` set and `stdin` on its stdin, waited for.
    pub fn in_sandbox_with_stdin(&self, argv: &[&str], env: &[(&str, &str)], stdin: &str) -> Done {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let input = self.dir().join(format!("{n}.in"));
        std::fs::write(&input, stdin).unwrap();
        let mut cmd = clients::nsenter(self.init.id());
        cmd.arg("--")
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(env.iter().copied());
        let stdin = File::open(&input).unwrap().into();
        self.spawn_with_output_files(n, &mut cmd, stdin, argv.join(" "))
            .wait()
    }

    /// Spawns `cmd` (run number `n`, named `args` in reports) with `stdin`, its stdout and
    /// stderr in the files `n.out` and `n.err` of the sandbox's dir.
    fn spawn_with_output_files(
        &self,
        n: usize,
        cmd: &mut Command,
        stdin: Stdio,
        args: String,
    ) -> Running {
        let (out, err) = (
            self.dir().join(format!("{n}.out")),
            self.dir().join(format!("{n}.err")),
        );
        let child = cmd
            .stdin(stdin)
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nsenter: {e}"));
        Running {
            child,
            args,
            plugins: self.plugin_dir.clone(),
            out,
            err,
        }
    }

    /// Runs `ctr args` and returns its output.
    pub fn ctr_out(&self, args: &[&str]) -> Done {
        self.spawn_ctr(args).wait()
    }

    /// Runs `ctr args`, panics unless it succeeds, returns its stdout.
    #[track_caller]
    pub fn ctr(&self, args: &[&str]) -> String {
        let done = self.ctr_out(args);
        assert_eq!(done.code, Some(0), "ctr failed:\n{done}");
        done.stdout
    }

    /// `ctr run --cni IMAGE id sh -c script` in the foreground (ctr waits for the task).
    pub fn spawn_run(&self, id: &str, script: &str) -> Running {
        self.spawn_ctr(&["run", "--cni", IMAGE, id, "sh", "-c", script])
    }

    /// The same with `--rm`.
    pub fn spawn_run_rm(&self, id: &str, script: &str) -> Running {
        self.spawn_ctr(&["run", "--cni", "--rm", IMAGE, id, "sh", "-c", script])
    }

    /// Waits until the task `id` runs (ctr starts it only after the CNI ADD), and returns the
    /// address of its eth0, which must be the one in libcni's cached result.
    #[track_caller]
    pub fn wait_attached(&self, id: &str) -> String {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let pid = loop {
            // `TASK PID STATUS`; the pid is in the sandbox's pid namespace.
            let tasks = self.ctr(&["task", "ls"]);
            let pid = tasks.lines().find_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() == 3 && w[0] == id && w[2] == "RUNNING").then(|| w[1].to_string())
            });
            if let Some(pid) = pid {
                break pid;
            }
            assert!(Instant::now() < deadline, "task {id} never ran: {tasks}");
            std::thread::sleep(Duration::from_millis(50));
        };
        // Read through the task's own namespace: `ctr task exec` sometimes loses the output
        // of a short command (its IO copy races the exit).
        let netns = self.inside(&format!("/proc/{pid}/ns/net"));
        let addr = clients::run_ok(
            Command::new("nsenter")
                .arg(format!("--net={}", netns.display()))
                .args(["ip", "-4", "-o", "addr", "show", "eth0"]),
        );
        let cidr = addr
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .unwrap_or_else(|| panic!("{id} has no IPv4 address on eth0: {addr}"))
            .to_string();
        let cache = self.cached_result(id);
        assert_eq!(cache["result"]["ips"][0]["address"], cidr, "{cache:#}");
        assert_eq!(cache["result"]["ips"][0]["gateway"], GATEWAY, "{cache:#}");
        cidr.split('/').next().unwrap().to_string()
    }

    /// What libcni (through go-cni) cached for `id`.
    #[track_caller]
    pub fn cached_result(&self, id: &str) -> Value {
        let path = self.inside(&format!(
            "/var/lib/cni/results/{NETWORK}-{}-{id}-eth0",
            self.namespace
        ));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("CNI result cache {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// busybox httpd in the outside namespace on :9000; the returned log shows the peers.
    pub fn outside_httpd(&self) -> HttpdLog {
        let www = self.dir().join("outside-www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), OUTSIDE_PAGE).unwrap();
        let log = self.dir().join("outside-httpd.log");
        let child = self
            .outside
            .ns
            .command("busybox")
            .args(["httpd", "-f", "-v", "-p"])
            .arg(format!("{}:{OUTSIDE_PORT}", self.outside.outside_v4))
            .arg("-h")
            .arg(&www)
            .stdin(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("busybox httpd: {e}"));
        self.outside_procs.borrow_mut().push(child);
        HttpdLog(log)
    }

    /// `wget` from the outside namespace, retried while the server starts.
    #[track_caller]
    pub fn outside_wget(&self, url: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self
                .outside
                .ns
                .command("timeout")
                .args(["5", "busybox", "wget", "-q", "-O", "-", url])
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8(out.stdout).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "outside: wget {url}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The busybox image, as a docker archive with the page the server serves.
    pub fn image_tar(&self) -> PathBuf {
        image::docker_archive(self.dir(), IMAGE, &[("www/index.html", PAGE)])
    }

    /// What must come back after removal.
    pub fn state(&self) -> State {
        State {
            links: clients::links(&self.host),
            rules: clients::rules(&self.host),
            leases: leases(&self.inside(&format!("/var/lib/cni/networks/{NETWORK}"))),
            cache: files(&self.inside("/var/lib/cni/results")),
        }
    }

    /// Nothing of the containers `ids` may be left: links (but the bridge), leases, cached
    /// results, rules (but the shared chains). With the reference, exactly its known leak:
    /// one masquerade chain per container (plugins#810).
    #[track_caller]
    pub fn assert_cleared(&self, before: &State, ids: &[&str]) {
        let reference = self.plugin_dir == Path::new(REFERENCE_DIR);
        if reference {
            // The reference cannot delete the host veth on an empty-netns DEL; it goes when
            // the kernel tears the container's namespace down, asynchronously.
            crate::wait_for(|| {
                self.state()
                    .links
                    .difference(&before.links)
                    .all(|l| l.starts_with(&format!("{BRIDGE} ")))
            });
        }
        let after = self.state();
        assert_links_cleared(&before.links, &after.links, BRIDGE);
        assert!(after.leases.is_empty(), "leases left: {:?}", after.leases);
        assert!(
            after.cache.is_empty(),
            "CNI results left: {:?}",
            after.cache
        );
        let full_ids: Vec<String> = ids
            .iter()
            .map(|id| format!("{}-{id}", self.namespace))
            .collect();
        let bad = rules_left(&before.rules, &after.rules, SUBNET_PREFIX, &full_ids);
        if !reference {
            assert!(bad.is_empty(), "rules left behind: {bad:#?}");
            return;
        }
        // plugins#810: per container, `:CNI-<hash>`, its ACCEPT and MASQUERADE rules, and the
        // POSTROUTING jump, all in nat, all naming the container.
        let chains: BTreeSet<&str> = bad
            .iter()
            .filter_map(|l| l.strip_prefix("iptables-save nat :"))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            chains.len(),
            ids.len(),
            "the reference bridge leaked one masquerade chain per container on ctr's \
             empty-netns DEL (plugins#810); did that change? left: {bad:#?}"
        );
        for chain in &chains {
            let of_chain: Vec<&String> = bad.iter().filter(|l| l.contains(chain)).collect();
            assert_eq!(of_chain.len(), 4, "{chain}: {of_chain:#?}");
            assert!(
                of_chain.iter().any(|l| l.ends_with("-j MASQUERADE")),
                "{of_chain:#?}"
            );
        }
        let unexplained: Vec<&String> = bad
            .iter()
            .filter(|l| !chains.iter().any(|c| l.contains(c)))
            .collect();
        assert!(
            unexplained.is_empty(),
            "rules left behind: {unexplained:#?}"
        );
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for mut c in self.outside_procs.borrow_mut().drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // EOF makes init stop containerd (by its pid) and exit; the kernel then kills the rest
        // of the pid namespace, and unshare exits once its child is gone.
        clients::stop_sandbox_init(
            &mut self.init,
            self.lifeline.take(),
            Duration::from_secs(15),
        );
        unmount_under(self.host.dir());
        remove_cgroups(&self.namespace);
    }
}

/// Mounts under `dir` in this mount namespace (none expected: containerd mounted in the
/// sandbox's private one), unmounted before the temp dir is removed.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    // Deepest first.
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = Command::new("umount").args(["-l", m]).status();
    }
}

/// runc made `/<namespace>/<id>` in every cgroup hierarchy (v1 controllers or the v2 root);
/// the containers are gone, so the directories are empty and can go, deepest first.
fn remove_cgroups(namespace: &str) {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup").join(namespace)];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(rd.flatten().map(|e| e.path().join(namespace)));
    }
    for root in roots.into_iter().filter(|r| r.is_dir()) {
        let mut dirs = vec![];
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                stack.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// containerd itself is a requirement: CI installs it (scripts/setup.sh); never skip.
pub fn require_containerd() {
    for tool in ["containerd", "ctr"] {
        match Command::new(tool).arg("--version").output() {
            Ok(o) if o.status.success() => {}
            other => panic!(
                "{tool} is required for this test (apt-get install containerd): {other:?}; \
                 the test runs it only inside throwaway namespaces"
            ),
        }
    }
}

pub struct State {
    pub links: BTreeSet<String>,
    pub rules: BTreeSet<String>,
    pub leases: Vec<String>,
    pub cache: Vec<String>,
}

/// busybox httpd's `-v` log: one line per request, starting with the peer's address.
pub struct HttpdLog(PathBuf);

impl HttpdLog {
    pub fn peers(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.0).unwrap();
        let mut peers: Vec<String> = log
            .lines()
            .filter_map(|l| l.split([' ', ':']).next())
            .filter(|w| w.parse::<IpAddr>().is_ok())
            .map(str::to_string)
            .collect();
        peers.dedup();
        peers
    }
}

/// A ctr command that has been started.
pub struct Running {
    child: Child,
    args: String,
    plugins: PathBuf,
    out: PathBuf,
    err: PathBuf,
}

impl Running {
    pub fn wait(mut self) -> Done {
        let code = clients::exit_code_within(&mut self.child, COMMAND_TIMEOUT);
        Done {
            client: "ctr",
            args: std::mem::take(&mut self.args),
            plugins: self.plugins.clone(),
            code,
            timeout: COMMAND_TIMEOUT,
            stdout: std::fs::read_to_string(&self.out).unwrap(),
            stderr: std::fs::read_to_string(&self.err).unwrap(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Only after a panic: a finished wait() reaped it already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
