//! Docker's filesystem and device confinement, probed from inside containers, with and without
//! `--rootfs` and `--userns`: the tmpfs /dev, masked and read-only paths, read-only /sys and
//! cgroup filesystem, the device cgroup (v1 for real; v2's eBPF program where a cgroup2 mount
//! exists), and the flags that change them. Each test checks that the host's own mounts under
//! /, /dev, /proc and /sys are as before and that nothing is left.

mod common;
use common::*;

/// The host's mounts that a container's confinement could leak into if propagation were wrong.
fn host_kernel_mounts() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| {
            let mp = l.split(' ').nth(4).unwrap_or("");
            mp == "/"
                || ["/dev", "/proc", "/sys"]
                    .iter()
                    .any(|p| mp == *p || mp.starts_with(&format!("{p}/")))
        })
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The busybox root with the mount points and /etc files an image has: under --userns the
/// container's root may not create them in a directory of the host's root.
fn image_rootfs(env: &Env) -> std::path::PathBuf {
    let root = busybox_rootfs(env.host.dir());
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["hosts", "hostname", "resolv.conf"] {
        std::fs::write(root.join("etc").join(f), "").unwrap();
    }
    for a in ["awk", "stat", "dd", "tr", "cut", "head", "tail", "mknod"] {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
    }
    root
}

/// Every probe prints `name=value`; the commands are busybox's, present with and without --rootfs.
const PROBES: &str = r#"
echo dev=$(busybox ls /dev | busybox tr '\n' ' ')
echo interrupts=$(busybox cat /proc/interrupts | busybox wc -c)
echo kcore=$(busybox cat /proc/kcore 2>/dev/null | busybox wc -c)
echo firmware=$(busybox ls /sys/firmware | busybox wc -l)
echo core_pattern=$( (echo x > /proc/sys/kernel/core_pattern) 2>&1)
echo sys=$(busybox touch /sys/kernel/tether-probe 2>&1)
echo sysnet=$(busybox ls /sys/class/net | busybox tr '\n' ' ')
busybox mknod /dev/x c 1 11 2>/dev/null && echo mknod=ok || echo mknod=refused
echo kmsg=$(busybox dd if=/dev/x of=/dev/null count=1 2>&1 | busybox head -1)
p=$(busybox grep ':memory:' /proc/self/cgroup | busybox cut -d: -f3)
echo cglimit=$( (echo 1 > /sys/fs/cgroup/memory$p/memory.limit_in_bytes) 2>&1)
echo procflags=$(busybox awk '$5 == "/proc" { f = $6 } END { print f }' /proc/self/mountinfo)
echo null=$(echo hi > /dev/null && echo ok)
echo pts=$(busybox awk '$5 == "/dev/pts" { f = $NF } END { print f }' /proc/self/mountinfo)
"#;

fn probe<'a>(out: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=");
    out.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .trim()
}

fn confined(rootfs: bool, userns: bool) {
    require_plugins(&["none"]);
    let env = Env::new();
    let before = host_kernel_mounts();
    let root = image_rootfs(&env);
    let r = root.display().to_string();
    let mut args = vec!["run", "--rm", "--net=none"];
    if rootfs {
        args.extend(["--rootfs", &r]);
    }
    if userns {
        args.push("--userns");
    }
    args.extend(["--", "sh", "-c", PROBES]);
    let run = env.tether(&args);
    let out = run.ok();
    let ctx = format!("rootfs={rootfs} userns={userns}:\n{out}");

    let dev: Vec<&str> = probe(out, "dev").split_whitespace().collect();
    assert_eq!(
        dev,
        [
            "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr",
            "stdin", "stdout", "tty", "urandom", "zero"
        ],
        "{ctx}"
    );
    assert_eq!(
        probe(out, "interrupts"),
        "0",
        "/proc/interrupts not masked: {ctx}"
    );
    assert_eq!(probe(out, "kcore"), "0", "{ctx}");
    assert_eq!(
        probe(out, "firmware"),
        "0",
        "/sys/firmware not masked: {ctx}"
    );
    assert!(
        probe(out, "core_pattern").contains("Read-only file system"),
        "{ctx}"
    );
    assert!(probe(out, "sys").contains("Read-only file system"), "{ctx}");
    // A sysfs of the container's own network namespace.
    assert_eq!(probe(out, "sysnet"), "lo", "{ctx}");
    // MKNOD is kept (host root); in a user namespace the kernel refuses it, as for Docker.
    assert_eq!(
        probe(out, "mknod"),
        if userns { "refused" } else { "ok" },
        "{ctx}"
    );
    if !userns {
        assert!(
            probe(out, "kmsg").contains("Operation not permitted"),
            "the device cgroup let /dev/kmsg open: {ctx}"
        );
    }
    assert!(
        probe(out, "cglimit").contains("Read-only file system"),
        "{ctx}"
    );
    let pf = probe(out, "procflags");
    for f in ["nosuid", "nodev", "noexec"] {
        assert!(pf.contains(f), "/proc lacks {f}: {ctx}");
    }
    assert_eq!(probe(out, "null"), "ok", "{ctx}");
    assert!(probe(out, "pts").contains("ptmxmode=666"), "{ctx}");
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern")
            .unwrap()
            .trim(),
        "x",
        "the host's core_pattern was written"
    );
    assert_eq!(host_kernel_mounts(), before, "the host's mounts changed");
    env.assert_clean();
}

#[test]
fn a_container_without_rootfs_is_confined() {
    confined(false, false);
}

#[test]
fn a_container_without_rootfs_in_a_user_namespace_is_confined() {
    confined(false, true);
}

#[test]
fn a_container_with_rootfs_is_confined() {
    confined(true, false);
}

#[test]
fn a_container_with_rootfs_in_a_user_namespace_is_confined() {
    confined(true, true);
}

#[test]
fn device_passes_one_host_device_through() {
    require_plugins(&["none"]);
    let env = Env::new();
    let root = image_rootfs(&env);
    let r = root.display().to_string();
    for extra in [vec![], vec!["--rootfs", r.as_str()], vec!["--userns"]] {
        let mut args = vec![
            "run",
            "--rm",
            "--net=none",
            "--device",
            "/dev/null:/dev/mynull",
        ];
        args.extend(extra.iter().copied());
        args.extend([
            "--",
            "sh",
            "-c",
            "echo hi > /dev/mynull && echo written; busybox stat -c '%F %t:%T' /dev/mynull",
        ]);
        let out = env.tether(&args).ok().to_string();
        assert!(out.contains("written"), "{extra:?}: {out}");
        assert!(
            out.contains("character special file 1:3"),
            "{extra:?}: {out}"
        );
    }
    env.assert_clean();
}

#[test]
fn a_device_that_does_not_exist_is_refused_with_nothing_made() {
    require_plugins(&["none"]);
    let env = Env::new();
    let before = host_kernel_mounts();
    let r = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--device",
        "/dev/tether-no-such-device",
        "--",
        "true",
    ]);
    assert_eq!(r.code, Some(125), "{r:#?}");
    r.fails_with("--device /dev/tether-no-such-device");
    let r = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--device",
        "/dev/null:/etc/null",
        "--",
        "true",
    ]);
    assert_eq!(r.code, Some(125), "{r:#?}");
    r.fails_with("under /dev/");
    let r = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--cgroupns",
        "sideways",
        "--",
        "true",
    ]);
    assert_eq!(r.code, Some(125), "{r:#?}");
    r.fails_with("--cgroupns sideways: use `private` or `host`");
    assert_eq!(host_kernel_mounts(), before);
    env.assert_clean();
}

#[test]
fn read_only_makes_the_root_unwritable_but_not_dev_shm() {
    require_plugins(&["none"]);
    let env = Env::new();
    let root = image_rootfs(&env);
    let r = root.display().to_string();
    let script = "busybox touch /x 2>&1; busybox touch /dev/shm/ok && echo shm-ok; true";
    for extra in [
        vec!["--rootfs", r.as_str()],
        vec!["--rootfs", r.as_str(), "--userns"],
    ] {
        let mut args = vec!["run", "--rm", "--net=none", "--read-only"];
        args.extend(extra.iter().copied());
        args.extend(["--", "sh", "-c", script]);
        let out = env.tether(&args).ok().to_string();
        assert!(out.contains("Read-only file system"), "{extra:?}: {out}");
        assert!(out.contains("shm-ok"), "{extra:?}: {out}");
        assert!(!root.join("x").exists());
    }
    // Without --rootfs: the container's view of the host's root, not the host's.
    let probe = env.host.dir().join("ro-probe");
    let p = probe.display().to_string();
    let out = env
        .tether(&[
            "run",
            "--rm",
            "--net=none",
            "--read-only",
            "--",
            "sh",
            "-c",
            &format!("busybox touch {p} 2>&1; true"),
        ])
        .ok()
        .to_string();
    // The test's directory may live on a mount of its own (a tmpfs /tmp): then it stays writable.
    if out.contains("Read-only file system") {
        assert!(!probe.exists());
    }
    std::fs::write(&probe, "host still writes").unwrap();
    env.assert_clean();
}

#[test]
fn privileged_lifts_the_filesystem_confinement() {
    require_plugins(&["none"]);
    let env = Env::new();
    let before = host_kernel_mounts();
    let root = image_rootfs(&env);
    let r = root.display().to_string();
    let script = r#"
echo interrupts=$(busybox cat /proc/interrupts | busybox wc -c)
echo loop0=$(busybox ls /dev/loop0 2>&1)
echo procsys=$(busybox awk '$5 == "/proc/sys"' /proc/self/mountinfo | busybox wc -l)
echo sysflags=$(busybox awk '$5 == "/sys" { f = $6 } END { print f }' /proc/self/mountinfo)
echo kmsg=$(busybox dd if=/dev/kmsg of=/dev/null count=1 2>&1 | busybox tail -1)
"#;
    for extra in [vec![], vec!["--rootfs", r.as_str()]] {
        let mut args = vec!["run", "--rm", "--net=none", "--privileged"];
        args.extend(extra.iter().copied());
        args.extend(["--", "sh", "-c", script]);
        let out = env.tether(&args).ok().to_string();
        let ctx = format!("{extra:?}: {out}");
        assert_ne!(probe(&out, "interrupts"), "0", "{ctx}");
        if std::path::Path::new("/dev/loop0").exists() {
            assert_eq!(probe(&out, "loop0"), "/dev/loop0", "{ctx}");
        }
        assert_eq!(probe(&out, "procsys"), "0", "{ctx}");
        assert!(probe(&out, "sysflags").starts_with("rw"), "{ctx}");
        assert!(probe(&out, "kmsg").contains("records out"), "{ctx}");
    }
    // With --rootfs a copy of the host's nodes: what the container makes there stays its own.
    let out = env
        .tether(&[
            "run",
            "--rm",
            "--net=none",
            "--privileged",
            "--rootfs",
            &r,
            "--",
            "sh",
            "-c",
            "busybox mknod /dev/tether-probe c 1 3 && echo made",
        ])
        .ok()
        .to_string();
    assert!(out.contains("made"), "{out}");
    assert!(!std::path::Path::new("/dev/tether-probe").exists());
    assert_eq!(host_kernel_mounts(), before);
    env.assert_clean();
}

#[test]
fn inspect_shows_masked_and_read_only_paths() {
    require_plugins(&["none"]);
    let env = Env::new();
    env.run_detached(
        "c",
        &["--net=none", "--device", "/dev/zero:/dev/z:r"],
        &["sleep", "30"],
    );
    let v = env.inspect("c");
    let fs = &v["config"]["fs"];
    assert_eq!(fs["maskedPaths"].as_array().unwrap().len(), 12, "{fs}");
    assert!(
        fs["maskedPaths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "/proc/kcore")
    );
    assert!(
        fs["readonlyPaths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "/proc/sys")
    );
    assert_eq!(fs["devices"][0]["containerPath"], "/dev/z");
    assert_eq!(fs["devices"][0]["access"], "r");
    // The device cgroup holds exactly Docker's list and the device.
    let dir = v["cgroup"]["paths"]["devices"]
        .as_str()
        .map(std::path::PathBuf::from);
    if let Some(d) = dir {
        let list = std::fs::read_to_string(d.join("devices.list")).unwrap();
        let mut got: Vec<&str> = list.lines().collect();
        got.sort();
        // Docker's list as the runtime writes it (its unit test pins it to Docker's own); the
        // device's `c 1:5 r` is not in the kernel's list: it merges it into `c 1:5 rwm`.
        let mut want: Vec<String> = tether::cgroups::devices::default_rules(&[])
            .iter()
            .map(ToString::to_string)
            .collect();
        want.sort();
        assert_eq!(got, want);
    }
    let out = env.tether(&[
        "exec",
        "c",
        "sh",
        "-c",
        "busybox dd if=/dev/z of=/dev/null count=1 2>&1; (echo x > /dev/z) 2>&1; \
         busybox mknod /dev/x c 1 11; busybox dd if=/dev/x of=/dev/null count=1 2>&1; true",
    ]);
    let out = out.ok();
    assert!(out.contains("records in"), "{out}");
    // `tether exec`'s processes are in the container's device cgroup too.
    assert!(
        out.contains("can't open '/dev/x': Operation not permitted"),
        "{out}"
    );
    env.tether(&["rm", "-f", "c"]).ok();
    let r = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--privileged",
        "-d",
        "--name",
        "p",
        "--",
        "sleep",
        "30",
    ]);
    r.ok();
    let fs = &env.inspect("p")["config"]["fs"];
    assert_eq!(fs["maskedPaths"].as_array().unwrap().len(), 0, "{fs}");
    env.tether(&["rm", "-f", "p"]).ok();
    env.assert_clean();
}

#[test]
fn the_v2_device_program_denies_what_the_list_does_not_allow() {
    require_plugins(&["none"]);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    if !mounts.lines().any(|l| l.contains(" - cgroup2 ")) {
        eprintln!("skipped: no cgroup2 hierarchy on this host");
        return;
    }
    let env = Env::new();
    let v2 = ["--cgroup-manager", "v2"];
    let mut args = v2.to_vec();
    args.extend([
        "run",
        "-d",
        "--name",
        "c",
        "--net=none",
        "--",
        "sleep",
        "30",
    ]);
    env.tether(&args).ok();
    let probe = "busybox mknod /dev/x c 1 11; busybox dd if=/dev/x of=/dev/null count=1 2>&1 | busybox head -1; echo hi > /dev/null && echo null-ok; cat /proc/self/cgroup";
    for cmd in [vec!["exec", "c"], vec!["run", "--rm", "--net=none"]] {
        let mut args = v2.to_vec();
        args.extend(cmd.iter().copied());
        args.extend(["sh", "-c", probe]);
        if cmd[0] == "run" {
            args.insert(args.len() - 3, "--");
        }
        let r = env.tether(&args);
        let out = r.ok();
        assert!(out.contains("Operation not permitted"), "{r:#?}");
        assert!(out.contains("null-ok"), "{r:#?}");
        // Private cgroupns by default on v2: the container's cgroup is its root (exec's too).
        assert!(out.lines().any(|l| l == "0::/"), "{r:#?}");
    }
    let st = env.inspect("c");
    assert_eq!(st["config"]["fs"]["cgroupnsPrivate"], true);
    assert_ne!(
        st["namespaces"]["cgroup"],
        std::fs::read_link("/proc/self/ns/cgroup")
            .unwrap()
            .display()
            .to_string()
    );
    env.tether(&["rm", "-f", "c"]).ok();
    env.assert_clean();
}

#[test]
fn cgroupns_private_roots_the_container_at_its_own_cgroup() {
    require_plugins(&["none"]);
    let env = Env::new();
    let r = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--cgroupns",
        "private",
        "--",
        "cat",
        "/proc/self/cgroup",
    ]);
    let out = r.ok();
    // Every hierarchy (v1 controllers, or the v2 line) starts at the container's cgroup.
    assert!(out.lines().all(|l| l.ends_with(":/")), "{out}");
    let r = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--cgroupns",
        "host",
        "--",
        "cat",
        "/proc/self/cgroup",
    ]);
    let out = r.ok();
    assert!(out.contains(&env.cgroup_parent), "{out}");
    env.assert_clean();
}
