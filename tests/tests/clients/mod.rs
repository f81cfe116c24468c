//! Shared by the real-client tests (`containerd.rs`, `cnitool.rs`, `podman.rs`,
//! `confinement_vs_podman.rs`): the host state a client may leave behind (links and iptables
//! rules) and how to judge it, a busybox root filesystem, the bridge conf the conflists start
//! with, and the pieces of a client's sandbox: its pid 1 under `unshare` (spawned, checked
//! ready, stopped), `nsenter` into it, the podman command line, and a bounded wait with the
//! report of how a command ended.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use netns_fixtures::{FIREWALL_SHARED_CHAINS, Netns, PORTMAP_SHARED_CHAINS, is_masq_chain};
use serde_json::{Value, json};

/// Debian's reference plugins (containernetworking-plugins).
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Chains that plugins share between all attachments and keep after the last DEL (see
/// netns-fixtures' `shared` module); the bridge's masquerade chains are recognised by
/// [`is_masq_chain`].
pub fn is_shared_chain(name: &str) -> bool {
    PORTMAP_SHARED_CHAINS.contains(&name) || FIREWALL_SHARED_CHAINS.contains(&name)
}

/// Panics unless every binary of `plugins` is in `dir`, naming how to get it.
#[track_caller]
pub fn require_plugins(dir: &Path, plugins: &[&str]) {
    for p in plugins {
        assert!(
            dir.join(p).is_file(),
            "{}/{p} is missing: build ours with `cargo build --workspace --bins`; the reference \
             comes with `apt-get install containernetworking-plugins`",
            dir.display()
        );
    }
}

/// The first plugin of the real clients' conflists: `bridge` named `bridge`, the gateway of
/// `subnet` with IP masquerade, host-local (default data dir) handing out `subnet` with a default
/// route.
pub fn masquerading_gateway_bridge(bridge: &str, subnet: &str) -> Value {
    json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipMasq": true,
        "ipam": {
            "type": "host-local",
            "subnet": subnet,
            "routes": [{"dst": "0.0.0.0/0"}],
        },
    })
}

/// Links (`name kind`) of `ns`, sorted.
pub fn links(ns: &Netns) -> BTreeSet<String> {
    ns.netlink()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| format!("{} {}", l.name, l.kind.as_deref().unwrap_or("-")))
        .collect()
}

/// Every chain and rule of `ns` (v4 and v6; filter, nat, raw, mangle), without counters.
pub fn rules(ns: &Netns) -> BTreeSet<String> {
    let mut rules = BTreeSet::new();
    for save in ["iptables-save", "ip6tables-save"] {
        for table in ["filter", "nat", "raw", "mangle"] {
            let out = ns
                .command(save)
                .args(["-t", table])
                .output()
                .unwrap_or_else(|e| panic!("{save}: {e}"));
            assert!(out.status.success(), "{save} -t {table}: {out:?}");
            for line in String::from_utf8(out.stdout).unwrap().lines() {
                if line.starts_with(':') || line.starts_with("-A") {
                    // Drop counters: `:CHAIN POLICY [pkts:bytes]`.
                    let line = line.split(" [").next().unwrap();
                    rules.insert(format!("{save} {table} {line}"));
                }
            }
        }
    }
    rules
}

/// The rules and chains in `after` but not in `before` that are not allowed to stay: anything
/// outside the shared chains, or anything that mentions one of `forbidden` (container ids, host
/// ports, ...). `subnet` may appear only in the bridge's per-network masquerade chains, which
/// exist for it. Also panics if a rule of `before` is gone.
#[track_caller]
pub fn rules_left(
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
    subnet: &str,
    forbidden: &[String],
) -> Vec<String> {
    let lost: Vec<_> = before.difference(after).collect();
    assert!(
        lost.is_empty(),
        "rules removed that were there before: {lost:#?}"
    );
    after
        .difference(before)
        .filter(|line| {
            let chains_ok = line
                .split([' ', ':'])
                .filter(|w| w.starts_with("CNI-") || w.starts_with("TETHER-"))
                .all(|w| is_shared_chain(w) || is_masq_chain(w));
            // Checked without the masquerade chain names: a hash may contain a port number.
            let masq_word = |w: &&str| is_masq_chain(w.trim_start_matches(':'));
            let masq = line.split(' ').any(|w| masq_word(&w));
            let text: String = line
                .split(' ')
                .filter(|w| !masq_word(w))
                .collect::<Vec<_>>()
                .join(" ");
            !chains_ok
                || (!masq && text.contains(subnet))
                || forbidden.iter().any(|f| text.contains(f.as_str()))
        })
        .cloned()
        .collect()
}

/// [`rules_left`] must be empty.
#[track_caller]
pub fn assert_rules_cleared(
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
    subnet: &str,
    forbidden: &[String],
) {
    let bad = rules_left(before, after, subnet, forbidden);
    assert!(bad.is_empty(), "rules left behind: {bad:#?}");
}

/// Links of `after` not in `before`, other than `allowed` (the network's bridge, which every
/// bridge plugin keeps after the last DEL); links of `before` must all still be there.
#[track_caller]
pub fn assert_links_cleared(before: &BTreeSet<String>, after: &BTreeSet<String>, allowed: &str) {
    let lost: Vec<_> = before.difference(after).collect();
    assert!(lost.is_empty(), "links removed: {lost:#?}");
    let added: Vec<_> = after
        .difference(before)
        .filter(|l| l.split(' ').next() != Some(allowed))
        .collect();
    assert!(added.is_empty(), "links left behind: {added:#?}");
}

/// Files under `dir`, recursively, as paths relative to it; none if it does not exist.
pub fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => panic!("{}: {e}", dir.display()),
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = vec![];
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// host-local's lease files under its data dir: everything but its lock and round-robin cursor,
/// which it keeps on purpose.
pub fn leases(data_dir: &Path) -> Vec<String> {
    files(data_dir)
        .into_iter()
        .filter(|f| {
            let name = f.rsplit('/').next().unwrap();
            name != "lock" && !name.starts_with("last_reserved_ip")
        })
        .collect()
}

/// A busybox-static root filesystem in `dir/rootfs` (`/bin` with every applet).
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("/bin/busybox (apt-get install busybox-static): {e}"));
    // The applet links are made here, not by running the copy (`chroot root busybox
    // --install`): a file just written may still be open for writing in a child another test
    // thread is forking, and exec'ing it then fails with ETXTBSY.
    let applets = run_ok(Command::new("/bin/busybox").arg("--list"));
    for applet in applets.lines().filter(|a| *a != "busybox") {
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).unwrap();
        }
    }
    root
}

#[track_caller]
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Spawns a sandbox's pid 1 in `host`'s network namespace: `bash -c script ARGS...` under
/// `unshare` in private mount and pid namespaces (`--kill-child`: when it exits, the kernel kills
/// everything in them), its stderr in `init_err`. Returns it, its stdin (the lifeline: the script
/// waits for its EOF) and the first line it printed, which is `ready` once it is set up (see
/// [`assert_sandbox_ready`], called once the caller owns the child and cleans up after it).
pub fn spawn_sandbox_init(
    host: &Netns,
    script: &str,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    init_err: &Path,
) -> (Child, Option<ChildStdin>, String) {
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
            script,
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(init_err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn unshare (util-linux): {e}"));
    let lifeline = init.stdin.take();
    let mut line = String::new();
    BufReader::new(init.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (init, lifeline, line)
}

/// The first line of [`spawn_sandbox_init`] must be `ready`; otherwise shows the init's stderr.
#[track_caller]
pub fn assert_sandbox_ready(first_line: &str, init_err: &Path) {
    assert_eq!(
        first_line.trim(),
        "ready",
        "sandbox setup failed: {}",
        std::fs::read_to_string(init_err).unwrap_or_default()
    );
}

/// Stops a sandbox of [`spawn_sandbox_init`]: closes its `lifeline`, so the script exits and
/// the kernel kills the rest of the pid namespace (unshare exits once its child is gone); kills
/// `init` itself if it is still there after `grace`.
pub fn stop_sandbox_init(init: &mut Child, lifeline: Option<ChildStdin>, grace: Duration) {
    drop(lifeline);
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = init.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = init.kill();
    let _ = init.wait();
}

/// `nsenter` into the mount, network and pid namespaces of the sandbox whose pid 1 is `init`.
/// nsenter forks after joining the pid namespace, so the program's /proc/self is right.
pub fn nsenter(init: u32) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--mount=/proc/{init}/ns/mnt"))
        .arg(format!("--net=/proc/{init}/ns/net"))
        .arg(format!("--pid=/proc/{init}/ns/pid_for_children"));
    cmd
}

/// `podman args` in the sandbox of `init` (see [`nsenter`]), with the storage (vfs, in
/// `dir/storage`) and config files (`dir/containers.conf`, `dir/storage.conf`) of the podman
/// tests, and no systemd: cgroupfs, events in a file.
pub fn podman_command(init: u32, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = nsenter(init);
    cmd.args(["--", "podman", "--root"])
        .arg(dir.join("storage"))
        .args([
            "--runroot",
            "/run/tether-storage",
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ])
        .args(args)
        .env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"));
    cmd
}

/// The `storage.conf` of the podman tests: vfs, runroot on the sandbox's private `/run`, images
/// under `dir/storage`.
pub fn write_podman_storage_conf(dir: &Path) {
    std::fs::write(
        dir.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"/run/tether-storage\"\ngraphroot = \"{}\"\n",
            dir.join("storage").display()
        ),
    )
    .unwrap();
}

/// Waits for `child` and returns its exit code (-1 if a signal ended it); after `timeout`, kills
/// it (by its pid) and returns `None`.
pub fn exit_code_within(child: &mut Child, timeout: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s.code().unwrap_or(-1));
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How a client command ended, for a report: `exit N` or `timed out after T` (`code` as from
/// [`exit_code_within`]), then its stdout and stderr.
pub fn outcome(code: Option<i32>, timeout: Duration, stdout: &str, stderr: &str) -> String {
    let status = match code {
        Some(c) => format!("exit {c}"),
        None => format!("timed out after {timeout:?}"),
    };
    format!("{status}\n--- stdout\n{stdout}--- stderr\n{stderr}")
}

/// A finished client command (`podman`, `ctr`), shown with how it ended and its output.
pub struct Done {
    /// The client, named in reports.
    pub client: &'static str,
    pub args: String,
    pub plugins: PathBuf,
    /// As from [`exit_code_within`]: `None` if it ran out of `timeout`.
    pub code: Option<i32>,
    pub timeout: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcome = outcome(self.code, self.timeout, &self.stdout, &self.stderr);
        write!(
            f,
            "{} {} (plugins from {}): {outcome}",
            self.client,
            self.args,
            self.plugins.display(),
        )
    }
}
