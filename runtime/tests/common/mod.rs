//! Shared helpers for the runtime tests: every test gets a throwaway host network namespace, its own
//! `--root`, `--config-dir` and cgroup parent, and runs the real `tether` binary inside that host.
#![allow(dead_code)]

use netns_fixtures::TestHost;
pub mod archive;
pub mod images;

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TETHER: &str = env!("CARGO_BIN_EXE_tether");

/// A fake host with private tether state.
pub struct Env {
    pub host: TestHost,
    pub root: PathBuf,
    pub config_dir: PathBuf,
    pub cgroup_parent: String,
}

/// The output of one `tether` run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "tether failed: {self:#?}");
        &self.stdout
    }

    #[track_caller]
    pub fn fails_with(&self, needle: &str) -> &str {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "tether should have failed: {self:#?}"
        );
        assert!(
            self.stderr.contains(needle),
            "error should mention {needle:?}: {self:#?}"
        );
        &self.stderr
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Env {
    pub fn new() -> Env {
        let host = TestHost::new();
        let root = host.dir().join("root");
        let config_dir = host.dir().join("net.d");
        Env {
            host,
            root,
            config_dir,
            cgroup_parent: format!("tether-test-{}", random_suffix()),
        }
    }

    /// `tether` inside the fake host with this test's state. Plugins: ours only, the workspace's
    /// binaries next to `tether`, named explicitly so a plugin the build lacks fails the test
    /// instead of being found elsewhere.
    pub fn cmd(&self) -> Command {
        let mut c = self.host.command(TETHER);
        c.env("TETHER_ROOT", &self.root)
            .env("TETHER_CONFIG_DIR", &self.config_dir)
            .env("TETHER_CGROUP_PARENT", &self.cgroup_parent)
            .env("TETHER_CONFIG", self.host.dir().join("no-config.json"))
            .env("TETHER_IMAGE_ROOT", self.image_root())
            .env("CNI_PATH", netns_fixtures::bin_dir())
            .env_remove("TETHER_CGROUP_MANAGER")
            .env_remove("CNI_ARGS")
            .env_remove("CAP_ARGS")
            .stdin(Stdio::null());
        c
    }

    /// This test's image store.
    pub fn image_root(&self) -> PathBuf {
        self.host.dir().join("images")
    }

    /// Runs `tether ARGS` to completion (60 s at most).
    pub fn tether(&self, args: &[&str]) -> Run {
        let mut c = self.cmd();
        c.args(args);
        run_with_timeout(c, Duration::from_secs(60))
    }

    /// Runs a detached container and returns its id.
    #[track_caller]
    pub fn run_detached(&self, name: &str, extra: &[&str], command: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(extra);
        args.push("--");
        args.extend_from_slice(command);
        let r = self.tether(&args);
        r.ok().trim().to_string()
    }

    #[track_caller]
    pub fn inspect(&self, name: &str) -> Value {
        let r = self.tether(&["inspect", name]);
        let v: Value = serde_json::from_str(r.ok()).expect("inspect prints JSON");
        v[0].clone()
    }

    pub fn pid(&self, name: &str) -> i32 {
        self.inspect(name)["state"]["pid"].as_i64().expect("pid") as i32
    }

    /// Every container directory in the state root.
    pub fn state_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("containers"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every cgroup directory named after this test's parent, in every hierarchy.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        find_named(
            Path::new("/sys/fs/cgroup"),
            &self.cgroup_parent,
            5,
            &mut found,
        );
        found
    }

    /// Links of the fake host, by name.
    pub fn host_links(&self) -> Vec<String> {
        let out = self
            .host
            .command("ip")
            .args(["-o", "link"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }

    /// `iptables-save -t nat` rules of the fake host (only `-A` lines).
    pub fn nat_rules(&self) -> Vec<String> {
        self.nat_lines(|l| l.starts_with("-A"))
    }

    /// The lines of the fake host's `iptables-save -t nat` that `keep` keeps.
    pub fn nat_lines(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let out = self
            .host
            .command("iptables-save")
            .args(["-t", "nat"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| keep(l))
            .map(str::to_string)
            .collect()
    }

    /// Address lease files of the built-in network's IPAM store.
    pub fn leases(&self) -> Vec<String> {
        let mut v = Vec::new();
        for net in std::fs::read_dir(self.root.join("ipam"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let n = f.file_name().to_string_lossy().into_owned();
                if n.parse::<std::net::IpAddr>().is_ok() {
                    v.push(n);
                }
            }
        }
        v
    }

    /// Cached CNI results still on disk.
    pub fn cni_cache(&self) -> Vec<String> {
        self.entries_under("cni/results")
    }

    /// Entries of a directory under the state root (hidden ones too; none if it is missing).
    pub fn entries_under(&self, rel: &str) -> Vec<String> {
        std::fs::read_dir(self.root.join(rel))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts that nothing of any container is left: state, cgroups, veths, NAT rules, leases,
    /// CNI cache entries, namespace mounts.
    #[track_caller]
    pub fn assert_clean(&self) {
        assert_eq!(
            self.state_entries(),
            Vec::<String>::new(),
            "state dirs left"
        );
        assert_eq!(
            self.cgroup_dirs(),
            Vec::<PathBuf>::new(),
            "cgroup dirs left"
        );
        let veths: Vec<String> = self
            .host_links()
            .into_iter()
            .filter(|l| l.starts_with("veth"))
            .collect();
        assert_eq!(veths, Vec::<String>::new(), "veths left");
        let nat: Vec<String> = self
            .nat_rules()
            .into_iter()
            .filter(|r| is_per_container_rule(r))
            .collect();
        assert_eq!(nat, Vec::<String>::new(), "per-container nat rules left");
        assert_eq!(self.leases(), Vec::<String>::new(), "leases left");
        assert_eq!(self.cni_cache(), Vec::<String>::new(), "CNI cache left");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = self.root.display().to_string();
        assert!(
            !mounts.lines().any(|l| l.contains(&root)),
            "mounts under the state root left"
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A failed test must not leave containers or cgroups behind.
        let r = self.tether(&["ps", "-a", "-q"]);
        for id in r.stdout.split_whitespace() {
            let _ = self.tether(&["rm", "-f", id]);
        }
        let mut dirs = self.cgroup_dirs();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Whether an `iptables-save` rule belongs to one container: it names a container id or a chain
/// with a hash in its name (`CNI-1a2b3c4d...`, `CNI-DN-...`). Shared base chains such as
/// `CNI-HOSTPORT-DNAT` and the jumps into them stay for the next container, as the reference
/// plugins' do; so do the bridge's per-network masquerade chains, whose name is hashed from the
/// network and subnet (`TETHER-MASQ-<hash>`), and the jumps into them.
pub fn is_per_container_rule(rule: &str) -> bool {
    rule.split(|c: char| c.is_whitespace() || c == '"' || c == '\\')
        .filter(|tok| !tok.starts_with("TETHER-MASQ-"))
        .flat_map(|tok| tok.split('-'))
        .any(|seg| {
            seg.len() >= 8
                && seg
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        })
}

fn find_named(dir: &Path, name: &str, depth: usize, out: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let p = e.path();
        if e.file_name().to_string_lossy() == name {
            // Include children (container cgroups).
            out.push(p.clone());
            if let Ok(sub) = std::fs::read_dir(&p) {
                for s in sub.flatten() {
                    if s.file_type().is_ok_and(|t| t.is_dir()) {
                        out.push(s.path());
                    }
                }
            }
        } else {
            find_named(&p, name, depth - 1, out);
        }
    }
}

/// Runs a command with captured output, killing it (by its own pid) after `timeout`.
pub fn run_with_timeout(mut c: Command, timeout: Duration) -> Run {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn tether");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let s = child.wait().unwrap();
            let out = Run {
                code: s.code(),
                stdout: t1.join().unwrap(),
                stderr: t2.join().unwrap(),
            };
            panic!("tether timed out after {timeout:?}: {out:#?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code(),
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
    }
}

/// Polls `cond` every 50 ms for up to `timeout`.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tiny root filesystem: Debian's busybox-static plus applet links.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static must be installed at /bin/busybox");
    for applet in [
        "sh", "ls", "cat", "echo", "hostname", "id", "ip", "ps", "mount", "wget", "httpd", "nc",
        "sleep", "test", "grep", "wc", "pwd", "touch",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root
}

/// Output lines of `Output`, for convenience.
pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The plugins only our workspace provides must be next to the tether binary.
#[track_caller]
pub fn require_plugins(names: &[&str]) {
    let dir = Path::new(TETHER).parent().unwrap();
    for n in names {
        assert!(
            dir.join(n).is_file(),
            "plugin {n} is missing from {}: build the workspace binaries first (cargo build --workspace --bins)",
            dir.display()
        );
    }
}
