//! UTS, IPC, PID, mount and user namespaces, and `--rootfs`, observed from inside and outside.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn hostname_is_the_containers_own() {
    require_plugins(&["none"]);
    let env = Env::new();
    let before = nix::unistd::gethostname().unwrap();
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--hostname",
        "box1",
        "--",
        "hostname",
    ]);
    assert_eq!(out.ok().trim(), "box1");
    // Without --hostname: the short id, as Docker does.
    let id = env.run_detached("h", &["--net=none"], &["sleep", "30"]);
    let out = env.tether(&["exec", "h", "hostname"]);
    assert_eq!(out.ok().trim(), &id[..12]);
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        before,
        "host hostname changed"
    );
}

/// Message queue ids listed in an `ipcs -q` output.
fn queue_ids(ipcs: &str) -> Vec<String> {
    ipcs.lines()
        .filter(|l| l.starts_with("0x"))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

#[test]
fn ipc_objects_made_inside_are_invisible_outside() {
    require_plugins(&["none"]);
    let env = Env::new();
    let host_keys = || std::fs::read_to_string("/proc/sysvipc/msg").unwrap();
    env.run_detached(
        "ipc",
        &["--net=none"],
        &["sh", "-c", "ipcmk -Q && sleep 30"],
    );
    assert!(wait_for(Duration::from_secs(5), || {
        env.tether(&["logs", "ipc"])
            .stdout
            .contains("Message queue id")
    }));
    let inside = env.tether(&["exec", "ipc", "ipcs", "-q"]);
    let ids = queue_ids(inside.ok());
    assert_eq!(
        ids.len(),
        1,
        "the queue is visible inside: {}",
        inside.stdout
    );
    // The key ipcmk chose must not exist in the host's IPC namespace.
    let key_line = inside.stdout.lines().find(|l| l.starts_with("0x")).unwrap();
    let key = i64::from_str_radix(
        key_line
            .split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    let host = host_keys();
    assert!(
        !host
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(&key.to_string())),
        "queue key {key} leaked into the host: {host}"
    );
    // And a second container has its own, empty IPC namespace.
    let other = env.tether(&["run", "--rm", "--net=none", "--", "ipcs", "-q"]);
    assert_eq!(queue_ids(other.ok()), Vec::<String>::new());
}

#[test]
fn the_command_is_pid_1_and_sees_only_its_processes() {
    require_plugins(&["none"]);
    let env = Env::new();
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--",
        "sh",
        "-c",
        "echo $$; sleep 5 & ls /proc | grep -E '^[0-9]+$' | wc -l",
    ]);
    let text = out.ok().to_string();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("1"), "{text}");
    // sh, sleep, ls, grep, wc: a handful, not the host's hundreds.
    let n: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!((2..=6).contains(&n), "{n} processes visible: {text}");
}

#[test]
fn exec_joins_the_same_namespaces() {
    require_plugins(&["none"]);
    let env = Env::new();
    env.run_detached(
        "ex",
        &["--net=none", "--hostname", "exhost"],
        &["sleep", "30"],
    );
    let out = env.tether(&["exec", "ex", "sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; ip -o link | wc -l; readlink /proc/self/ns/pid /proc/self/ns/net /proc/self/ns/ipc /proc/self/ns/uts /proc/self/ns/mnt"]);
    let text = out.ok().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "exhost");
    assert_eq!(
        lines[1].trim(),
        "sleep 30",
        "PID 1 is the container's command"
    );
    assert_eq!(lines[2].trim(), "1", "only lo, as in the container");
    let ns = env.inspect("ex")["namespaces"].clone();
    for (i, kind) in ["pid", "net", "ipc", "uts", "mnt"].iter().enumerate() {
        assert_eq!(
            lines[3 + i],
            ns[kind].as_str().unwrap(),
            "{kind} namespace differs"
        );
    }
    // The exit code comes back.
    assert_eq!(
        env.tether(&["exec", "ex", "sh", "-c", "exit 7"]).code,
        Some(7)
    );
    env.tether(&["exec", "ex", "no-such-cmd"])
        .fails_with("not found");
}

#[test]
fn mounts_stay_inside() {
    require_plugins(&["none"]);
    let env = Env::new();
    let dir = env.host.dir().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let d = dir.display().to_string();
    let script = format!("mount -t tmpfs none {d} && touch {d}/inside && ls {d}");
    // Mounting needs CAP_SYS_ADMIN (and with it Docker's seccomp profile allows mount).
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--cap-add",
        "SYS_ADMIN",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.ok().trim(), "inside");
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "the tmpfs propagated to the host"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&d));
}

#[test]
fn userns_root_inside_is_not_root_outside() {
    require_plugins(&["none"]);
    let env = Env::new();
    env.run_detached("u", &["--net=none", "--userns"], &["sleep", "30"]);
    let pid = env.pid("u");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("100000"),
        "{uid_line}"
    );
    let out = env.tether(&["exec", "u", "sh", "-c", "id -u; cat /proc/self/uid_map"]);
    let text = out.ok().to_string();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("0"));
    let map: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"]);
    // Root inside cannot do what host root can: load a host-owned, root-only file.
    let r = env.tether(&["exec", "u", "cat", "/etc/shadow"]);
    assert_ne!(r.code, Some(0), "container root read /etc/shadow: {r:#?}");
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap(),
        std::fs::read_link("/proc/self/ns/user").unwrap()
    );
}

#[test]
fn rootfs_from_busybox() {
    require_plugins(&["none"]);
    let env = Env::new();
    let root = busybox_rootfs(env.host.dir());
    let r = root.display().to_string();
    let out = env.tether(&[
        "run", "--rm", "--net=none", "--rootfs", &r, "--hostname", "bb", "-w", "/work", "--",
        "sh", "-c",
        "cat /etc/hostname; pwd; ls /; test -e /usr || echo no-host-usr; cat /proc/1/cmdline | tr '\\0' ' '; echo; grep localhost /etc/hosts | head -1; ls /dev",
    ]);
    let text = out.ok().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "bb");
    assert_eq!(lines[1], "/work");
    assert!(
        text.lines().any(|l| l == "no-host-usr"),
        "the host's /usr is visible: {text}"
    );
    for d in ["bin", "dev", "etc", "proc"] {
        assert!(text.lines().any(|l| l == d), "/{d} missing: {text}");
    }
    assert!(text.contains("sh -c"), "{text}");
    assert!(text.contains("127.0.0.1\tlocalhost"), "{text}");
    for n in ["null", "zero", "urandom", "shm"] {
        assert!(text.lines().any(|l| l == n), "/dev/{n} missing: {text}");
    }
    // The rootfs got only the mount points and the working directory.
    assert!(root.join("work").is_dir());
    // With --userns as well.
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--rootfs",
        &r,
        "--userns",
        "--",
        "id",
        "-u",
    ]);
    assert_eq!(out.ok().trim(), "0");
}
