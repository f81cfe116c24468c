//! A real runtime as the client: Debian's containerd 1.6 with `ctr run --cni`. ctr (not
//! containerd) runs CNI through go-cni's defaults: the first conflist in `/etc/cni/net.d`,
//! plugins from `/opt/cni/bin`, ifname `eth0`, container id `<namespace>-<id>`, `CNI_NETNS`
//! `/proc/<pid>/ns/net` on ADD and **empty on DEL**, no capability args, no `CNI_ARGS`, and a
//! DEL only when `ctr run` was not detached. The same scenarios run with Debian's reference
//! plugins and with ours (`target/<profile>`).
//!
//! ```text
//!  test process ── unshare --mount --pid ── bash (pid 1 of the sandbox, lifeline on stdin)
//!                  in the throwaway host       ├── containerd --config <tmp>/config.toml
//!                  netns (TestHost)            │     └── containerd-shim-runc-v2 ── runc ── task
//!                                              └── (nsenter) ctr -a <tmp>/containerd.sock ...
//!  private mounts: /run, /var/lib (libcni cache, host-local leases), /opt (tmpfs)
//!                  /opt/cni/bin  <- bind of the plugin dir under test
//!                  /etc/cni/net.d <- bind of <tmp>/net.d (the test's conflist)
//!                  /usr/lib/cni   <- empty tmpfs when testing ours (no fallback possible)
//! ```
//!
//! containerd gets a private root, state dir and sockets in the test's temp dir, the CRI plugin
//! (the only one that listens on TCP) and the snapshotters it cannot use disabled, and a unique
//! containerd namespace per test, so its cgroups are `/<namespace>/<id>`, removed at the end.
//! The image is a busybox-static root filesystem packed by the test as a docker archive and
//! `ctr image import`ed (no registry needed). When the test ends or panics, the sandbox's pid 1
//! stops containerd by its pid and exits; the kernel then kills what is left of the pid
//! namespace (shims, containers), and the private mounts go with the mount namespace.
//!
//! Known reference failure, asserted so the test notices when it changes: the reference bridge
//! leaks its per-container masquerade chain (`CNI-<hash>` and its `POSTROUTING` jump) on every
//! DEL with an empty `CNI_NETNS`, i.e. on every ctr DEL (containernetworking/plugins#810).

mod clients;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clients::{REFERENCE_DIR, assert_links_cleared, files, leases, rules_left};
use netns_fixtures::{Outside, TestHost, bin_dir};
use serde_json::{Value, json};

const PLUGINS: &[&str] = &["bridge", "host-local", "portmap"];
const NETWORK: &str = "ctrnet";
const BRIDGE: &str = "ctr0";
const SUBNET: &str = "10.77.0.0/24";
const SUBNET_PREFIX: &str = "10.77.0.";
const GATEWAY: &str = "10.77.0.1";
const IMAGE: &str = "localhost/tether-busybox:latest";
const PAGE: &str = "tether containerd drop-in\n";
const OUTSIDE_PAGE: &str = "hello from the outside\n";
const CTR_PORT: u16 = 8080;
const HOST_PORT: u16 = 18080;
const OUTSIDE_PORT: u16 = 9000;
/// Any single ctr command; the whole test stays far below.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn containerd_runs_tether_containers_that_reach_each_other_and_the_outside() {
    lifecycle(&bin_dir());
}

#[test]
fn containerd_runs_reference_containers_that_reach_each_other_and_the_outside() {
    lifecycle(Path::new(REFERENCE_DIR));
}

#[test]
fn containerd_detached_tether_container_needs_the_users_del() {
    detached(&bin_dir());
}

#[test]
fn containerd_detached_reference_container_needs_the_users_del() {
    detached(Path::new(REFERENCE_DIR));
}

#[test]
fn containerd_runs_ten_tether_containers_in_parallel() {
    parallel(&bin_dir());
}

#[test]
fn containerd_runs_ten_reference_containers_in_parallel() {
    parallel(Path::new(REFERENCE_DIR));
}

#[test]
fn containerd_publishes_a_static_port_mapping_with_tether_portmap() {
    static_port(&bin_dir());
}

#[test]
fn containerd_publishes_a_static_port_mapping_with_reference_portmap() {
    static_port(Path::new(REFERENCE_DIR));
}

#[test]
fn containerd_with_a_broken_tether_conflist_fails_cleanly() {
    broken(&bin_dir());
}

#[test]
fn containerd_with_a_broken_reference_conflist_fails_cleanly() {
    broken(Path::new(REFERENCE_DIR));
}

/// The conflist ctr reads: bridge + host-local (default data dir, in the sandbox's /var/lib),
/// then `extra` plugins.
fn conflist(extra: Vec<Value>) -> Value {
    let mut plugins = vec![json!({
        "type": "bridge",
        "bridge": BRIDGE,
        "isGateway": true,
        "ipMasq": true,
        "ipam": {
            "type": "host-local",
            "subnet": SUBNET,
            "routes": [{"dst": "0.0.0.0/0"}],
        },
    })];
    plugins.extend(extra);
    json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": plugins})
}

/// A server run in the foreground (ctr waits for it) and killed with `ctr task kill -s 9`, then
/// deleted; a client run with `--rm` that pings the gateway, fetches the server's page across
/// the bridge and a page from the outside through NAT, then exits by itself.
fn lifecycle(plugin_dir: &Path) {
    let sb = Sandbox::new(plugin_dir, &conflist(vec![]));
    let before = sb.state();

    let srv = sb.spawn_run("srv", &format!("httpd -f -p {CTR_PORT} -h /www"));
    let srv_ip = sb.wait_attached("srv");
    let outside = sb.outside_httpd();
    let cli = sb.ctr(&[
        "run",
        "--cni",
        "--rm",
        IMAGE,
        "cli",
        "sh",
        "-c",
        &format!(
            "set -e; ip -4 -o addr show eth0; ping -c1 -W2 {GATEWAY} >/dev/null; \
             echo gateway ok; timeout 10 wget -q -O - http://{srv_ip}:{CTR_PORT}/; \
             timeout 10 wget -q -O - http://{}:{OUTSIDE_PORT}/",
            sb.outside.outside_v4
        ),
    ]);
    assert!(cli.contains(&format!("inet {SUBNET_PREFIX}")), "{cli}");
    assert!(
        cli.ends_with(&format!("gateway ok\n{PAGE}{OUTSIDE_PAGE}")),
        "cli saw: {cli}"
    );
    let cli_ip = cli
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(cli_ip, srv_ip);
    let peers = outside.peers();
    assert_eq!(
        peers,
        [sb.outside.host_v4.to_string()],
        "the outside must see the host's address (masquerade), not {cli_ip}"
    );

    sb.ctr(&["task", "kill", "-s", "9", "srv"]);
    let status = srv.wait();
    assert_eq!(
        status.code,
        Some(137),
        "ctr run srv after SIGKILL: {status}"
    );
    let _ = sb.ctr_out(&["task", "delete", "srv"]);
    sb.ctr(&["container", "delete", "srv"]);
    assert_eq!(sb.ctr(&["container", "ls", "-q"]), "");

    sb.assert_cleared(&before, &["srv", "cli"]);
}

/// `ctr run -d --cni` never sends a DEL: after `ctr task kill` and `ctr container delete` the
/// lease and libcni's cached result (and with the reference its masquerade chain) stay. What a
/// user must do, shown here: run the conflist's DEL for container id `<namespace>-<id>`,
/// ifname `eth0`, empty netns, plugins in reverse order (as ctr would have), and remove libcni's
/// cache file `/var/lib/cni/results/<network>-<namespace>-<id>-eth0`.
fn detached(plugin_dir: &Path) {
    let list = conflist(vec![]);
    let sb = Sandbox::new(plugin_dir, &list);
    let before = sb.state();
    sb.ctr(&["run", "-d", "--cni", IMAGE, "bg", "sleep", "600"]);
    sb.wait_attached("bg");
    sb.ctr(&["task", "kill", "-s", "9", "bg"]);
    wait_for(|| sb.ctr(&["task", "ls"]).contains("STOPPED"));
    sb.ctr(&["task", "delete", "bg"]);
    sb.ctr(&["container", "delete", "bg"]);
    let left = sb.state();
    assert!(
        left.leases.iter().any(|l| l.starts_with(SUBNET_PREFIX)),
        "ctr sent a DEL for a detached container? {:?}",
        left.leases
    );
    assert_eq!(left.cache.len(), 1, "{:?}", left.cache);

    // The user's DEL.
    let id = format!("{}-bg", sb.namespace);
    let plugins = list["plugins"].as_array().unwrap();
    for plugin in plugins.iter().rev() {
        let mut conf = plugin.clone();
        conf["name"] = NETWORK.into();
        conf["cniVersion"] = list["cniVersion"].clone();
        let done = sb.in_sandbox_with_stdin(
            &[&format!(
                "/opt/cni/bin/{}",
                plugin["type"].as_str().unwrap()
            )],
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", &id),
                ("CNI_NETNS", ""),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            &conf.to_string(),
        );
        assert_eq!(done.code, Some(0), "the user's DEL: {done}");
    }
    std::fs::remove_file(sb.inside(&format!("/var/lib/cni/results/{NETWORK}-{id}-eth0"))).unwrap();
    sb.assert_cleared(&before, &["bg"]);
}

/// Ten `ctr run --cni --rm` at once, each pinging the gateway: ten distinct addresses, and
/// nothing left.
fn parallel(plugin_dir: &Path) {
    let sb = Sandbox::new(plugin_dir, &conflist(vec![]));
    let before = sb.state();
    let ids: Vec<String> = (0..10).map(|i| format!("par{i}")).collect();
    let runs: Vec<Running> = ids
        .iter()
        .map(|id| {
            sb.spawn_run_rm(
                id,
                &format!("ip -4 -o addr show eth0; ping -c1 -W2 {GATEWAY} >/dev/null && echo ok"),
            )
        })
        .collect();
    let mut ips = BTreeSet::new();
    for (id, run) in ids.iter().zip(runs) {
        let done = run.wait();
        assert_eq!(done.code, Some(0), "ctr run {id}: {done}");
        assert!(done.stdout.ends_with("ok\n"), "{id}: {done}");
        let ip = done
            .stdout
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .unwrap_or_else(|| panic!("{id}: no address: {done}"))
            .to_string();
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 10, "addresses: {ips:?}");
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    sb.assert_cleared(&before, &ids);
}

/// ctr has no `-p`, so the mapping is static: a `runtimeConfig` written into the conflist,
/// which libcni passes through untouched when the plugin declares no capability (ctr sends
/// none). Outside -> host:18080 reaches the container; after the kill, nothing is left.
fn static_port(plugin_dir: &Path) {
    let portmap = json!({
        "type": "portmap",
        "runtimeConfig": {"portMappings": [
            {"hostPort": HOST_PORT, "containerPort": CTR_PORT, "protocol": "tcp"}
        ]},
    });
    let sb = Sandbox::new(plugin_dir, &conflist(vec![portmap]));
    let before = sb.state();
    let srv = sb.spawn_run("web", &format!("httpd -f -p {CTR_PORT} -h /www"));
    sb.wait_attached("web");
    let url = format!("http://{}:{HOST_PORT}/", sb.outside.host_v4);
    let page = sb.outside_wget(&url);
    assert_eq!(page, PAGE, "outside -> {url}");

    sb.ctr(&["task", "kill", "-s", "9", "web"]);
    let status = srv.wait();
    assert_eq!(
        status.code,
        Some(137),
        "ctr run web after SIGKILL: {status}"
    );
    let _ = sb.ctr_out(&["task", "delete", "web"]);
    sb.ctr(&["container", "delete", "web"]);
    sb.assert_cleared(&before, &["web"]);
}

/// A conflist whose first plugin cannot work (an IPAM range that is not a network): `ctr run`
/// fails with the plugin's error and nothing of the attempt is left.
fn broken(plugin_dir: &Path) {
    let mut c = conflist(vec![]);
    c["plugins"][0]["ipam"]["subnet"] = "10.77.0.0/33".into();
    let sb = Sandbox::new(plugin_dir, &c);
    let before = sb.state();
    let run = sb.ctr_out(&["run", "--cni", "--rm", IMAGE, "bad", "true"]);
    assert_ne!(run.code, Some(0), "ctr run with a broken conflist: {run}");
    assert!(
        run.stderr.contains("10.77.0.0/33") || run.stderr.contains("invalid"),
        "the plugin's error should reach the user: {run}"
    );
    // While ctr's half-made task (and so the container's namespace) still exists.
    let during = sb.state();
    let bad = rules_left(&before.rules, &during.rules, SUBNET_PREFIX, &[]);
    assert!(bad.is_empty(), "rules left behind: {bad:#?}");
    assert!(during.leases.is_empty(), "leases left: {:?}", during.leases);
    assert!(
        during.cache.is_empty(),
        "CNI results left: {:?}",
        during.cache
    );
    let added: Vec<&str> = during
        .links
        .difference(&before.links)
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    if sb.plugin_dir == Path::new(REFERENCE_DIR) {
        // The reference makes its bridge and the veth before asking IPAM, and undoes neither
        // when IPAM fails; the veth goes only with the container's namespace.
        assert_eq!(
            added,
            ["bridge", "veth"],
            "the reference left its bridge and veth after a failed ADD before; did that change?"
        );
    } else {
        assert!(added.is_empty(), "a failed ADD left links: {added:?}");
    }
    // ctr leaves the created task behind on a CNI failure; removing it is the user's part.
    sb.ctr(&["task", "delete", "-f", "bad"]);
    sb.ctr(&["container", "delete", "bad"]);
    let allowed = if sb.plugin_dir == Path::new(REFERENCE_DIR) {
        BRIDGE
    } else {
        "-"
    };
    wait_for(|| sb.state().links.difference(&before.links).count() <= 1);
    assert_links_cleared(&before.links, &sb.state().links, allowed);
}

/// Polls `done` for up to 5 s: the kernel removes a dead namespace's links asynchronously.
fn wait_for(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// containerd and ctr in their own throwaway host: network namespace, private mount and pid
/// namespaces.
struct Sandbox {
    host: TestHost,
    outside: Outside,
    /// `unshare`, whose child (bash) is pid 1 of the sandbox and the parent of containerd.
    init: Child,
    /// Our end of the init's stdin: when it closes (drop, or this process dies) init stops
    /// containerd and exits, and the kernel kills every process left in the pid namespace.
    lifeline: Option<ChildStdin>,
    /// The containerd namespace: containers' cgroups are `/<namespace>/<id>`.
    namespace: String,
    plugin_dir: PathBuf,
    /// Children run in the outside namespace (its HTTP server), killed on drop.
    outside_procs: std::cell::RefCell<Vec<Child>>,
    runs: AtomicUsize,
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
    fn new(plugin_dir: &Path, conflist: &Value) -> Sandbox {
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
                 \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.aufs\"]\n\
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
        let mut init = host
            .command("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--",
                "bash",
                "-c",
                INIT,
                "tether-containerd-init",
            ])
            .arg(plugin_dir)
            .arg(&net_d)
            .arg(dir.join("config.toml"))
            .arg(dir.join("containerd.log"))
            .arg(hide)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&init_err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn unshare (util-linux): {e}"));
        let lifeline = init.stdin.take();
        let mut line = String::new();
        BufReader::new(init.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
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
        assert_eq!(
            line.trim(),
            "ready",
            "sandbox setup failed: {}",
            std::fs::read_to_string(&init_err).unwrap_or_default()
        );
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

    fn dir(&self) -> &Path {
        self.host.dir()
    }

    /// A path as seen inside the sandbox's mount namespace.
    fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.init.id()))
    }

    /// `ctr -a <sock> -n <namespace> args`, inside the sandbox, not waited for.
    fn spawn_ctr(&self, args: &[&str]) -> Running {
        let p = self.init.id();
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let (out, err) = (
            self.dir().join(format!("{n}.out")),
            self.dir().join(format!("{n}.err")),
        );
        // nsenter forks after joining the pid namespace, so ctr's /proc/<task pid> is right.
        let child = Command::new("nsenter")
            .arg(format!("--mount=/proc/{p}/ns/mnt"))
            .arg(format!("--net=/proc/{p}/ns/net"))
            .arg(format!("--pid=/proc/{p}/ns/pid_for_children"))
            .args(["--", "ctr", "-a"])
            .arg(self.dir().join("containerd.sock"))
            .args(["-n", &self.namespace])
            .args(args)
            // Files, not pipes: the shims outlive ctr and may hold inherited pipes.
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nsenter: {e}"));
        Running {
            child,
            args: args.join(" "),
            plugins: self.plugin_dir.clone(),
            out,
            err,
        }
    }

    /// `argv` inside the sandbox with only `env` set and `stdin` on its stdin, waited for.
    fn in_sandbox_with_stdin(&self, argv: &[&str], env: &[(&str, &str)], stdin: &str) -> Done {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let input = self.dir().join(format!("{n}.in"));
        std::fs::write(&input, stdin).unwrap();
        let p = self.init.id();
        let (out, err) = (
            self.dir().join(format!("{n}.out")),
            self.dir().join(format!("{n}.err")),
        );
        let child = Command::new("nsenter")
            .arg(format!("--mount=/proc/{p}/ns/mnt"))
            .arg(format!("--net=/proc/{p}/ns/net"))
            .arg(format!("--pid=/proc/{p}/ns/pid_for_children"))
            .arg("--")
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(env.iter().copied())
            .stdin(File::open(&input).unwrap())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nsenter: {e}"));
        Running {
            child,
            args: argv.join(" "),
            plugins: self.plugin_dir.clone(),
            out,
            err,
        }
        .wait()
    }

    /// Runs `ctr args` and returns its output.
    fn ctr_out(&self, args: &[&str]) -> Done {
        self.spawn_ctr(args).wait()
    }

    /// Runs `ctr args`, panics unless it succeeds, returns its stdout.
    #[track_caller]
    fn ctr(&self, args: &[&str]) -> String {
        let done = self.ctr_out(args);
        assert_eq!(done.code, Some(0), "ctr failed:\n{done}");
        done.stdout
    }

    /// `ctr run --cni IMAGE id sh -c script` in the foreground (ctr waits for the task).
    fn spawn_run(&self, id: &str, script: &str) -> Running {
        self.spawn_ctr(&["run", "--cni", IMAGE, id, "sh", "-c", script])
    }

    /// The same with `--rm`.
    fn spawn_run_rm(&self, id: &str, script: &str) -> Running {
        self.spawn_ctr(&["run", "--cni", "--rm", IMAGE, id, "sh", "-c", script])
    }

    /// Waits until the task `id` runs (ctr starts it only after the CNI ADD), and returns the
    /// address of its eth0, which must be the one in libcni's cached result.
    #[track_caller]
    fn wait_attached(&self, id: &str) -> String {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let tasks = self.ctr(&["task", "ls"]);
            if tasks
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id) && l.contains("RUNNING"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "task {id} never ran: {tasks}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let addr = self.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "probe",
            id,
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "eth0",
        ]);
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
    fn cached_result(&self, id: &str) -> Value {
        let path = self.inside(&format!(
            "/var/lib/cni/results/{NETWORK}-{}-{id}-eth0",
            self.namespace
        ));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("CNI result cache {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// busybox httpd in the outside namespace on :9000; the returned log shows the peers.
    fn outside_httpd(&self) -> HttpdLog {
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
    fn outside_wget(&self, url: &str) -> String {
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

    /// A docker archive (`manifest.json`, config, one layer) of a busybox-static root
    /// filesystem with the page the server serves.
    fn image_tar(&self) -> PathBuf {
        let root = clients::busybox_rootfs(self.dir());
        std::fs::create_dir_all(root.join("www")).unwrap();
        std::fs::write(root.join("www/index.html"), PAGE).unwrap();
        let img = self.dir().join("image");
        std::fs::create_dir_all(&img).unwrap();
        let layer = img.join("layer.tar");
        clients::run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&layer)
                .arg("."),
        );
        let layer_sum = sha256(&layer);
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_sum}")]},
        });
        std::fs::write(img.join("config.json"), config.to_string()).unwrap();
        let config_sum = sha256(&img.join("config.json"));
        std::fs::rename(
            img.join("config.json"),
            img.join(format!("{config_sum}.json")),
        )
        .unwrap();
        std::fs::rename(&layer, img.join(format!("{layer_sum}.tar"))).unwrap();
        let manifest = json!([{
            "Config": format!("{config_sum}.json"),
            "RepoTags": [IMAGE],
            "Layers": [format!("{layer_sum}.tar")],
        }]);
        std::fs::write(img.join("manifest.json"), manifest.to_string()).unwrap();
        let tar = self.dir().join("image.tar");
        clients::run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&img)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        );
        tar
    }

    /// What must come back after removal.
    fn state(&self) -> State {
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
    fn assert_cleared(&self, before: &State, ids: &[&str]) {
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
        if self.plugin_dir != Path::new(REFERENCE_DIR) {
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
        drop(self.lifeline.take());
        let start = Instant::now();
        let exited = loop {
            if let Ok(Some(_)) = self.init.try_wait() {
                break true;
            }
            if start.elapsed() > Duration::from_secs(15) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !exited {
            let _ = self.init.kill();
            let _ = self.init.wait();
        }
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
fn require_containerd() {
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

fn sha256(path: &Path) -> String {
    let out = clients::run_ok(Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap().to_string()
}

struct State {
    links: BTreeSet<String>,
    rules: BTreeSet<String>,
    leases: Vec<String>,
    cache: Vec<String>,
}

/// busybox httpd's `-v` log: one line per request, starting with the peer's address.
struct HttpdLog(PathBuf);

impl HttpdLog {
    fn peers(&self) -> Vec<String> {
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
struct Running {
    child: Child,
    args: String,
    plugins: PathBuf,
    out: PathBuf,
    err: PathBuf,
}

impl Running {
    fn wait(mut self) -> Done {
        let start = Instant::now();
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s.code().unwrap_or(-1));
            }
            if start.elapsed() > COMMAND_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Done {
            args: std::mem::take(&mut self.args),
            plugins: self.plugins.clone(),
            code,
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

struct Done {
    args: String,
    plugins: PathBuf,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match self.code {
            Some(c) => format!("exit {c}"),
            None => format!("timed out after {COMMAND_TIMEOUT:?}"),
        };
        write!(
            f,
            "ctr {} (plugins from {}): {status}\n--- stdout\n{}--- stderr\n{}",
            self.args,
            self.plugins.display(),
            self.stdout,
            self.stderr
        )
    }
}
