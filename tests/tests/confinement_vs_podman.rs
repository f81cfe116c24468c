//! Docker's default confinement, side by side with a real engine: the same probe script runs in
//! `podman run --rm --network none IMAGE sh -c PROBES` (Debian's podman 4.3 with its own OCI
//! runtime, crun) and in `tether run --rm --net=none --rootfs ROOTFS -- sh -c PROBES`, on the
//! same busybox root filesystem, and the answers are compared probe by probe.
//!
//! ```text
//!   probe script ──┬── podman run (image imported from the rootfs tarball) ──┐
//!                  └── tether run --rootfs (the same rootfs directory) ──────┴─ key=value lines
//!                                                                                 │
//!          agreed probes: equal on both ── differences: asserted value by value ──┘
//! ```
//!
//! Docker's values are the target (anchors-2.md "Container confinement"); where Podman's defaults
//! differ from Docker's for a documented reason, the test asserts both values explicitly, so it
//! notices when either side changes:
//! - capabilities: Podman >= 4.0 keeps 11 (Debian's containers.conf `default_capabilities`,
//!   copied into the sandbox's), without MKNOD, NET_RAW and AUDIT_WRITE, which Docker keeps
//!   (0xa80425fb vs 0x800405fb); so `mknod` itself fails in Podman, while in Docker and tether
//!   it succeeds and opening the node fails (device cgroup); Podman given `--cap-add MKNOD`
//!   shows its device cgroup stops the open just the same;
//! - /proc/interrupts: masked by Docker (and tether), not by Podman 4.3;
//! - mount flags: runc (Docker) keeps nosuid,nodev,noexec on the read-only /proc paths and on
//!   the cgroup filesystem, and its /dev tmpfs is nosuid only; crun (Podman) remounts the /proc
//!   paths plain `ro`, leaves cgroup v1's tmpfs writable (its controllers are read-only) and
//!   adds noexec to /dev.
//!
//! The probes can fail: `--privileged` on both sides must open the node, mount, write /proc/sys.
//!
//! Isolation as in `podman.rs`: podman runs in a throwaway host network namespace and in private
//! mount and pid namespaces (tmpfs on /run, /dev/shm, /var/lib, /var/tmp), storage in a temp dir.
//! Each `podman run` gets cgroups (crun applies the device cgroup only then) under a parent named
//! after the test, which the sandbox removes once its pid namespace is gone (podman keeps the
//! parent and conmon's cgroup). When the test ends or panics, the namespace's init exits and the
//! kernel kills everything in it. tether runs in the same host network namespace with a private
//! `--root` and cgroup parent; both must leave nothing behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use netns_fixtures::{TestHost, bin_dir};

mod clients;

const IMAGE: &str = "localhost/tether-probe:latest";
/// Any single podman or tether command; the whole test stays far below.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Docker's 14 default capabilities (moby `caps/defaults.go`).
const DOCKER_CAPS: &str = "00000000a80425fb";
/// Podman's 11 (containers.conf `default_capabilities`): Docker's without MKNOD (bit 27),
/// NET_RAW (13) and AUDIT_WRITE (29).
const PODMAN_CAPS: &str = "00000000800405fb";
const NO_CAPS: &str = "0000000000000000";

/// Prints one `key=value` line per probe. A probe that runs a command prints `ok` or `fail:`
/// and the command's message (the same busybox on both sides, so the same errno gives the same
/// words). Nothing here can harm the host if a probe unexpectedly succeeds: the sysctl and
/// cgroup writes write back the value just read (and the hostname is the container's own), the
/// device probe only opens the host's first loop device.
const PROBES: &str = r#"
p() { n=$1; shift; if out=$("$@" 2>&1); then echo "$n=ok"; else echo "$n=fail:$(echo $out)"; fi; }
sed -n 's/^\(Cap[A-Za-z]*\|Seccomp\|NoNewPrivs\):[[:space:]]*/\1=/p' /proc/self/status
echo "uid=$(id -u)"
echo "gid=$(id -g)"
p mount mount -t tmpfs x /tmp
p unshare unshare -n true
p ip_link_add ip link add tether0 type dummy
for f in kcore keys timer_list sched_debug latency_stats timer_stats interrupts; do
    [ -e /proc/$f ] && echo "size:/proc/$f=$(wc -c < /proc/$f)"
done
for d in /proc/acpi /proc/scsi /sys/firmware; do
    [ -e $d ] && echo "entries:$d=$(ls -A $d | wc -l)"
done
for m in /dev /proc /proc/sys /proc/sysrq-trigger /proc/bus /proc/fs /proc/irq /sys /sys/fs/cgroup \
         /sys/fs/cgroup/memory; do
    echo "opts:$m=$(awk -v m=$m '$5 == m { o = $6 } END { print o }' /proc/self/mountinfo)"
done
p write_proc_sys sh -c 'cat /proc/sys/kernel/hostname > /proc/sys/kernel/hostname'
p write_sys touch /sys/tether-probe
p write_limit sh -c 'f=/sys/fs/cgroup/memory/memory.limit_in_bytes; [ -e $f ] || f=/sys/fs/cgroup/memory.max; cat $f > $f'
echo "dev=$(ls -A /dev | tr '\n' ' ')"
p mknod mknod /dev/tether-loop0 b 7 0
p open_node sh -c ': < /dev/tether-loop0'
"#;

/// Docker's answers (runc's mounts, moby's profile and masks) to the probes on which Podman
/// agrees with it; tether must give them too. Probes of files this kernel lacks
/// (/proc/sysrq-trigger, timer_stats, ...) are answered by neither side.
const AGREED: &[(&str, &str)] = &[
    ("CapInh", NO_CAPS),
    ("CapAmb", NO_CAPS),
    ("Seccomp", "2"),
    ("NoNewPrivs", "0"),
    ("uid", "0"),
    ("gid", "0"),
    ("mount", "fail:mount: permission denied (are you root?)"),
    (
        "unshare",
        "fail:unshare: unshare(0x40000000): Operation not permitted",
    ),
    (
        "ip_link_add",
        "fail:ip: RTNETLINK answers: Operation not permitted",
    ),
    ("size:/proc/kcore", "0"),
    ("size:/proc/keys", "0"),
    ("size:/proc/timer_list", "0"),
    ("entries:/proc/acpi", "0"),
    ("entries:/sys/firmware", "0"),
    ("opts:/proc", "rw,nosuid,nodev,noexec,relatime"),
    ("opts:/sys", "ro,nosuid,nodev,noexec,relatime"),
    (
        "write_proc_sys",
        "fail:sh: can't create /proc/sys/kernel/hostname: Read-only file system",
    ),
    (
        "write_sys",
        "fail:touch: /sys/tether-probe: Read-only file system",
    ),
    (
        "dev",
        "core fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero",
    ),
];

/// A block node made inside: Docker's device cgroup allows `mknod` of any node but no open of
/// one outside its list.
const OPEN_DENIED: &str = "fail:sh: can't open /dev/tether-loop0: Operation not permitted";

/// Paths Docker makes read-only by a bind mount: read-only on both sides. runc (Docker) keeps the
/// flags of the /proc they come from (`ro,nosuid,nodev,noexec,relatime`), and so does tether;
/// crun (Podman) remounts them plain `ro,relatime`.
const READ_ONLY: &[&str] = &["/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"];
const RUNC_RO_OPTS: &str = "ro,nosuid,nodev,noexec,relatime";
const CRUN_RO_OPTS: &str = "ro,relatime";

#[test]
fn tether_confines_like_podman_where_podman_agrees_with_docker() {
    require_podman();
    let sb = Sandbox::new();
    let root = clients::busybox_rootfs(sb.dir());
    sb.podman(&["import", sb.image_tar(&root).to_str().unwrap(), IMAGE]);
    let tether = Tether::new(&sb.host);

    let podman = parse(&sb.podman_run(&[]));
    let ours = parse(&tether.run(&root, &[]));
    let both = table(&podman, &ours);
    eprintln!("{both}");
    for (probe, docker) in AGREED {
        assert_eq!(podman.get(*probe), ours.get(*probe), "{probe}:\n{both}");
        if let Some(v) = ours.get(*probe) {
            assert_eq!(v, docker, "{probe} is not Docker's:\n{both}");
        }
    }
    for path in READ_ONLY {
        let key = format!("opts:{path}");
        assert_eq!(ours[&key], RUNC_RO_OPTS, "{key}:\n{both}");
        assert_eq!(podman[&key], CRUN_RO_OPTS, "{key}:\n{both}");
    }

    // Capabilities: Docker's 14 in tether, the 11 of Debian's containers.conf in Podman (no
    // MKNOD, NET_RAW, AUDIT_WRITE since Podman 4.0).
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(ours[set], DOCKER_CAPS, "{set}:\n{both}");
        assert_eq!(podman[set], PODMAN_CAPS, "{set}:\n{both}");
    }
    // Hence `mknod` itself: Docker keeps CAP_MKNOD, and its device cgroup stops the open;
    // Podman refuses the node. Given CAP_MKNOD, Podman's device cgroup (crun's) stops the open
    // just as Docker's does.
    assert_eq!(ours["mknod"], "ok", "{both}");
    assert_eq!(ours["open_node"], OPEN_DENIED, "{both}");
    assert_eq!(
        podman["mknod"], "fail:mknod: /dev/tether-loop0: Operation not permitted",
        "{both}"
    );
    let podman_mknod = parse(&sb.podman_run(&["--cap-add", "MKNOD"]));
    assert_eq!(podman_mknod["mknod"], "ok", "{podman_mknod:?}");
    assert_eq!(podman_mknod["open_node"], OPEN_DENIED, "{podman_mknod:?}");
    // Docker masks /proc/interrupts (moby ≥ 25: it leaks host IRQ counts); Podman 4.3's masked
    // paths do not include it.
    assert_eq!(ours["size:/proc/interrupts"], "0", "{both}");
    assert_ne!(podman["size:/proc/interrupts"], "0", "{both}");
    // /dev: runc mounts its tmpfs `nosuid` only (Docker: `nosuid,strictatime,mode=755`); crun
    // adds `noexec`.
    assert_eq!(ours["opts:/dev"], "rw,nosuid", "{both}");
    assert_eq!(podman["opts:/dev"], "rw,nosuid,noexec", "{both}");
    // The cgroup filesystem: runc mounts cgroup v1's tmpfs read-only like the controllers, all
    // nosuid,nodev,noexec; crun leaves the tmpfs writable. Both keep the controllers (and so
    // the container's own limit files) read-only, so a container cannot raise its own limits.
    if ours["opts:/sys/fs/cgroup/memory"].is_empty() {
        // cgroup v2: the one cgroup2 mount is read-only on both.
        assert_eq!(podman["opts:/sys/fs/cgroup"], ours["opts:/sys/fs/cgroup"]);
    } else {
        assert!(ours["opts:/sys/fs/cgroup"].starts_with("ro,"), "{both}");
        assert!(podman["opts:/sys/fs/cgroup"].starts_with("rw,"), "{both}");
        for side in [&ours, &podman] {
            assert!(
                side["opts:/sys/fs/cgroup/memory"].starts_with("ro,"),
                "{both}"
            );
        }
    }
    for side in [&ours, &podman] {
        assert!(
            side["write_limit"].ends_with("Read-only file system"),
            "{both}"
        );
    }

    // `--user 1000`: uid 1000, gid 0 (no group given, as Docker), no capabilities left in the
    // effective and permitted sets; the bounding set is each engine's default.
    let podman_user = parse(&sb.podman_run(&["--user", "1000"]));
    let ours_user = parse(&tether.run(&root, &["--user", "1000"]));
    let both_user = table(&podman_user, &ours_user);
    for side in [&ours_user, &podman_user] {
        assert_eq!(side["uid"], "1000", "{both_user}");
        assert_eq!(side["gid"], "0", "{both_user}");
        for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
            assert_eq!(side[set], NO_CAPS, "{set}:\n{both_user}");
        }
        assert_eq!(side["Seccomp"], "2", "{both_user}");
    }
    assert_eq!(ours_user["CapBnd"], DOCKER_CAPS, "{both_user}");
    assert_eq!(podman_user["CapBnd"], PODMAN_CAPS, "{both_user}");

    // The probes can fail: `--privileged` on both sides opens the node, mounts and writes
    // /proc/sys.
    for side in [
        parse(&sb.podman_run(&["--privileged"])),
        parse(&tether.run(&root, &["--privileged"])),
    ] {
        for probe in ["mknod", "open_node", "mount", "write_proc_sys"] {
            assert_eq!(side[probe], "ok", "{probe} with --privileged: {side:?}");
        }
    }

    tether.assert_clean();
    // Ends podman's pid namespace and removes its cgroups, or panics naming what is left.
    drop(sb);
}

/// `key=value` lines, by key.
fn parse(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Both answers, one probe a line, for failure messages.
fn table(podman: &BTreeMap<String, String>, ours: &BTreeMap<String, String>) -> String {
    let mut keys: Vec<&String> = podman.keys().chain(ours.keys()).collect();
    keys.sort();
    keys.dedup();
    let none = String::from("-");
    keys.iter()
        .map(|k| {
            format!(
                "{k:<26} podman: {:<40} tether: {}\n",
                podman.get(*k).unwrap_or(&none),
                ours.get(*k).unwrap_or(&none)
            )
        })
        .collect()
}

/// Podman itself is a requirement: CI installs it (scripts/setup.sh); never skip.
fn require_podman() {
    let out = Command::new("podman").arg("--version").output();
    match out {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "podman is required for this test (apt-get install podman): {other:?}; \
             the test runs it only inside throwaway namespaces"
        ),
    }
}

/// `tether` in the test's host with private state (as runtime/tests/common does).
struct Tether<'a> {
    host: &'a TestHost,
    root: PathBuf,
    cgroup_parent: String,
}

impl<'a> Tether<'a> {
    fn new(host: &'a TestHost) -> Tether<'a> {
        Tether {
            host,
            root: host.dir().join("tether-root"),
            cgroup_parent: format!("tether-pconf-{}", unique_name(host)),
        }
    }

    /// `tether run --rm --net=none --rootfs ROOT FLAGS -- sh -c PROBES`; its stdout.
    #[track_caller]
    fn run(&self, rootfs: &Path, flags: &[&str]) -> String {
        let mut cmd = self.host.command(bin_dir().join("tether"));
        cmd.env("TETHER_ROOT", &self.root)
            .env("TETHER_CONFIG_DIR", self.host.dir().join("net.d"))
            .env("TETHER_CGROUP_PARENT", &self.cgroup_parent)
            .env("TETHER_CONFIG", self.host.dir().join("no-config.json"))
            .env("CNI_PATH", bin_dir())
            .env_remove("TETHER_CGROUP_MANAGER")
            .args(["run", "--rm", "--net=none", "--rootfs"])
            .arg(rootfs)
            .args(flags)
            .args(["--", "sh", "-c", PROBES]);
        let run = run_bounded(cmd, self.host.dir(), "tether");
        assert_eq!(run.status, Some(0), "tether failed:\n{run}");
        run.stdout
    }

    /// `--rm` left no state and no cgroup directory.
    #[track_caller]
    fn assert_clean(&self) {
        let state: Vec<_> = std::fs::read_dir(self.root.join("containers"))
            .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(state.is_empty(), "tether state left: {state:?}");
        let cgroups = cgroup_dirs(&self.cgroup_parent);
        assert!(cgroups.is_empty(), "tether cgroups left: {cgroups:?}");
    }
}

/// Podman in its own throwaway host: network namespace, private mount and pid namespaces.
struct Sandbox {
    host: TestHost,
    /// `unshare`, in the private mount namespace; its child is the namespace's pid 1.
    init: Child,
    /// When it closes (drop, or this process dies) init exits and the kernel kills every
    /// process of the pid namespace.
    lifeline: Option<ChildStdin>,
    /// Podman's cgroup parent (`--cgroup-parent`), under every hierarchy's root: crun applies
    /// the device cgroup only to a container that has cgroups.
    cgroup_parent: String,
}

/// pid 1 of the sandbox (as in `podman.rs`).
const INIT: &str = r#"
set -eu
mount -t tmpfs -o mode=0755 tether-run /run
mount -t tmpfs tether-shm /dev/shm
mount -t tmpfs tether-varlib /var/lib
mount -t tmpfs tether-vartmp /var/tmp
# crun refuses hosts with both cgroup v1 controllers and a v2 hierarchy; cgroups are disabled
# for podman, so hide the v2 half in this mount namespace.
if [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ] && mountpoint -q /sys/fs/cgroup/unified; then
    umount /sys/fs/cgroup/unified
fi
echo ready
while read -r _; do :; done
"#;

impl Sandbox {
    fn new() -> Sandbox {
        let host = TestHost::new();
        let dir = host.dir().to_path_buf();
        for d in ["storage", "networks"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ncgroups = \"disabled\"\ndefault_capabilities = [{}]\n\
                 [network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{}\"\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
                installed_default_capabilities()
                    .iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                dir.join("networks").display()
            ),
        )
        .unwrap();
        clients::write_podman_storage_conf(&dir);
        let init_err = dir.join("init.stderr");
        let (init, lifeline, line) =
            clients::spawn_sandbox_init(&host, INIT, std::iter::empty::<&str>(), &init_err);
        let sb = Sandbox {
            cgroup_parent: format!("tether-pconf-podman-{}", unique_name(&host)),
            host,
            init,
            lifeline,
        };
        clients::assert_sandbox_ready(&line, &init_err);
        sb
    }

    fn dir(&self) -> &Path {
        self.host.dir()
    }

    /// Runs `podman args` in the sandbox; panics unless it succeeds; returns its stdout.
    #[track_caller]
    fn podman(&self, args: &[&str]) -> String {
        let p = self.init.id();
        let d = self.dir();
        let cmd = clients::podman_command(p, d, args);
        let run = run_bounded(cmd, d, "podman");
        assert_eq!(run.status, Some(0), "podman {}:\n{run}", args.join(" "));
        run.stdout
    }

    /// `podman run --rm --network none FLAGS IMAGE sh -c PROBES` in its own cgroup; its stdout.
    #[track_caller]
    fn podman_run(&self, flags: &[&str]) -> String {
        let parent = format!("--cgroup-parent=/{}", self.cgroup_parent);
        let mut args = vec![
            "run",
            "--rm",
            "--network",
            "none",
            "--cgroups=enabled",
            &parent,
        ];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[IMAGE, "sh", "-c", PROBES]);
        self.podman(&args)
    }

    /// A tarball of `root`, for `podman import`.
    fn image_tar(&self, root: &Path) -> PathBuf {
        let tar = self.dir().join("rootfs.tar");
        clients::run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        );
        tar
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // EOF makes init exit; the kernel then kills the whole pid namespace.
        clients::stop_sandbox_init(
            &mut self.init,
            self.lifeline.take(),
            Duration::from_secs(10),
        );
        // Podman removes the container's cgroup but keeps the parent and conmon's; with every
        // process gone they are empty and can go, deepest first.
        for dir in cgroup_dirs(&self.cgroup_parent).iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        let left = cgroup_dirs(&self.cgroup_parent);
        if !left.is_empty() && !std::thread::panicking() {
            panic!("podman's cgroups could not be removed: {left:?}");
        }
    }
}

/// The capabilities Debian's podman gives a container by default: `default_capabilities` of
/// the installed /usr/share/containers/containers.conf (copied into the sandbox's own
/// containers.conf, which replaces it).
fn installed_default_capabilities() -> Vec<String> {
    let path = "/usr/share/containers/containers.conf";
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path} (Debian's golang-github-containers-common): {e}"));
    let start = text
        .find("\ndefault_capabilities = [")
        .unwrap_or_else(|| panic!("no default_capabilities in {path}"));
    let list = &text[start..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    let caps: Vec<String> = list
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_string())
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        caps,
        [
            "CHOWN",
            "DAC_OVERRIDE",
            "FOWNER",
            "FSETID",
            "KILL",
            "NET_BIND_SERVICE",
            "SETFCAP",
            "SETGID",
            "SETPCAP",
            "SETUID",
            "SYS_CHROOT"
        ],
        "{path} changed: update PODMAN_CAPS"
    );
    caps
}

/// A name for this test's cgroups, from its temp dir.
fn unique_name(host: &TestHost) -> String {
    host.dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// Every directory of the cgroup `name` (at the root of any hierarchy) and below it, parents
/// before children.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        out.push(dir.to_path_buf());
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = vec![];
    let base = Path::new("/sys/fs/cgroup");
    let mut roots = vec![base.to_path_buf()];
    roots.extend(
        std::fs::read_dir(base)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    );
    for root in roots {
        let dir = root.join(name);
        if dir.is_dir() {
            walk(&dir, &mut out);
        }
    }
    out
}

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcome = clients::outcome(self.status, COMMAND_TIMEOUT, &self.stdout, &self.stderr);
        f.write_str(&outcome)
    }
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Runs `cmd` with its output in files under `dir` (pipes may be held by conmon), killing it
/// by its pid after [`COMMAND_TIMEOUT`].
fn run_bounded(mut cmd: Command, dir: &Path, what: &str) -> Run {
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let (out, err) = (
        dir.join(format!("{what}-{n}.out")),
        dir.join(format!("{what}-{n}.err")),
    );
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let code = clients::exit_code_within(&mut child, COMMAND_TIMEOUT);
    let read = |p: &Path| {
        let mut s = String::new();
        File::open(p).unwrap().read_to_string(&mut s).unwrap();
        s
    };
    Run {
        status: code,
        stdout: read(&out),
        stderr: read(&err),
    }
}
