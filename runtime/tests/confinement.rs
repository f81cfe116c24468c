//! Docker's default confinement of a container's processes, read from inside: capabilities
//! (/proc/self/status), the seccomp filter (calls that fail with EPERM), the flags that change
//! them, `tether exec` getting what the init got, and bad input refused with nothing made.

mod common;
use common::*;

const DOCKER_CAPS: &str = "00000000a80425fb";

/// The `Cap*:`, `NoNewPrivs:` and `Seccomp:` lines of the container's /proc/self/status.
fn status_of(env: &Env, flags: &[&str]) -> std::collections::BTreeMap<String, String> {
    let mut args = vec!["run", "--rm", "--net=none"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "cat", "/proc/self/status"]);
    let r = env.tether(&args);
    r.ok()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .filter(|(k, _)| k.starts_with("Cap") || k == "Seccomp" || k == "NoNewPrivs")
        .collect()
}

/// Runs `sh -c script` in a container with `flags`; returns its stdout (it must succeed).
fn sh(env: &Env, flags: &[&str], script: &str) -> String {
    let mut args = vec!["run", "--rm", "--net=none"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    env.tether(&args).ok().to_string()
}

#[track_caller]
fn assert_docker_default(s: &std::collections::BTreeMap<String, String>) {
    for k in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(s[k], DOCKER_CAPS, "{k}: {s:?}");
    }
    assert_eq!(s["CapInh"], "0000000000000000");
    assert_eq!(s["CapAmb"], "0000000000000000");
    assert_eq!(s["Seccomp"], "2", "{s:?}");
}

#[test]
fn a_container_gets_dockers_capabilities_and_seccomp_filter() {
    let env = Env::new();
    let s = status_of(&env, &[]);
    assert_docker_default(&s);
    assert_eq!(s["NoNewPrivs"], "0");
    // The same inside a user namespace and in a busybox root.
    assert_docker_default(&status_of(&env, &["--userns"]));
    let root = busybox_rootfs(env.host.dir());
    assert_docker_default(&status_of(&env, &["--rootfs", root.to_str().unwrap()]));
    env.assert_clean();
}

#[test]
fn namespace_and_mount_calls_are_refused_with_eperm() {
    let env = Env::new();
    let root = busybox_rootfs(env.host.dir());
    let r = root.to_str().unwrap();
    for flags in [vec!["--rootfs", r], vec!["--rootfs", r, "--userns"]] {
        let out = sh(
            &env,
            &flags,
            "unshare -n true 2>&1; echo unshare=$?; mount -t tmpfs x /mnt 2>&1; echo mount=$?; \
             ip link add vx0 type veth peer name vx1 2>&1; echo ip=$?",
        );
        assert!(out.contains("unshare=1"), "{out}");
        assert!(out.contains("Operation not permitted"), "{out}");
        assert!(!out.contains("mount=0") && !out.contains("ip=0"), "{out}");
    }
    env.assert_clean();
}

#[test]
fn cap_add_net_admin_lets_ip_link_add_work() {
    let env = Env::new();
    let out = sh(
        &env,
        &["--cap-add", "net_admin"],
        "ip link add vx0 type veth peer name vx1 && ip -o link show vx0 && grep CapEff /proc/self/status",
    );
    assert!(out.contains("vx0"), "{out}");
    assert!(out.contains("00000000a80435fb"), "{out}");
    // --cap-drop takes one away, ALL takes all.
    let s = status_of(&env, &["--cap-drop", "CAP_CHOWN", "--cap-drop", "kill"]);
    assert_eq!(
        s["CapEff"],
        format!("{:016x}", 0xa80425fbu64 & !0x1 & !0x20)
    );
    let s = status_of(&env, &["--cap-drop", "ALL", "--cap-add", "SYS_TIME"]);
    assert_eq!(s["CapEff"], format!("{:016x}", 1u64 << 25));
    env.assert_clean();
}

#[test]
fn privileged_and_unconfined_restore_what_they_should() {
    let env = Env::new();
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let host_bnd = host
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    let s = status_of(&env, &["--privileged"]);
    assert_eq!(s["CapEff"], host_bnd);
    assert_eq!(s["Seccomp"], "0");
    let out = sh(
        &env,
        &["--privileged"],
        "unshare -n true && echo unshare-ok",
    );
    assert!(out.contains("unshare-ok"), "{out}");
    let s = status_of(&env, &["--security-opt", "seccomp=unconfined"]);
    assert_eq!(s["Seccomp"], "0");
    assert_eq!(s["CapEff"], DOCKER_CAPS);
    let s = status_of(&env, &["--security-opt", "no-new-privileges"]);
    assert_eq!(s["NoNewPrivs"], "1");
    assert_eq!(s["Seccomp"], "2");
    env.assert_clean();
}

#[test]
fn a_custom_profile_denying_mkdir_makes_mkdir_fail() {
    let env = Env::new();
    let p = env.host.dir().join("no-mkdir.json");
    std::fs::write(
        &p,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", p.display());
    let out = sh(
        &env,
        &["--security-opt", &opt],
        "mkdir /tmp/tether-no-mkdir-$$ 2>&1; echo mkdir=$?; rmdir /tmp/tether-no-mkdir-$$ 2>/dev/null; : > /tmp/tether-file-$$ && rm /tmp/tether-file-$$ && echo create-ok; grep Seccomp: /proc/self/status",
    );
    assert!(
        out.contains("Operation not permitted") && out.contains("mkdir=1"),
        "{out}"
    );
    // Only mkdir is denied: that profile allows everything else.
    assert!(
        out.contains("create-ok") && out.contains("Seccomp:\t2"),
        "{out}"
    );
    env.assert_clean();
}

#[test]
fn a_non_root_user_has_no_capabilities() {
    let env = Env::new();
    for extra in [vec![], vec!["--userns"]] {
        let mut flags = vec!["--user", "1000:1000"];
        flags.extend_from_slice(&extra);
        let out = sh(
            &env,
            &flags,
            "id -u; id -g; grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status",
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..2], ["1000", "1000"], "{out}");
        assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
        assert!(out.contains("CapPrm:\t0000000000000000"), "{out}");
        assert!(out.contains(&format!("CapBnd:\t{DOCKER_CAPS}")), "{out}");
    }
    let s = status_of(&env, &["--user", "1000"]);
    assert_eq!(s["CapEff"], "0000000000000000");
    assert_eq!(s["Seccomp"], "2");
    env.assert_clean();
}

#[test]
fn exec_gets_the_confinement_of_the_init() {
    let env = Env::new();
    env.run_detached(
        "c",
        &["--net=none", "--cap-add", "NET_ADMIN", "--user", "0:0"],
        &["sleep", "60"],
    );
    let r = env.tether(&["exec", "c", "cat", "/proc/self/status"]);
    let out = r.ok();
    assert!(out.contains("CapEff:\t00000000a80435fb"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    let i = env.inspect("c");
    let c = &i["config"]["confinement"];
    assert_eq!(c["seccomp"]["mode"], "default");
    assert_eq!(c["noNewPrivileges"], false);
    assert_eq!(c["privileged"], false);
    assert!(
        c["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "CAP_NET_ADMIN"),
        "{c}"
    );
    assert_eq!(c["user"]["uid"], 0);
    env.tether(&["rm", "-f", "c"]).ok();
    let info: serde_json::Value = serde_json::from_str(env.tether(&["info"]).ok()).unwrap();
    assert_eq!(info["confinement"]["capabilityMask"], DOCKER_CAPS);
    assert_eq!(info["confinement"]["seccomp"]["mode"], "default");
    env.assert_clean();
}

#[test]
fn bad_confinement_flags_exit_125_with_nothing_made() {
    let env = Env::new();
    let bad = env.host.dir().join("bad.json");
    std::fs::write(&bad, r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_SOMETIMES"}]}"#).unwrap();
    let broken = env.host.dir().join("broken.json");
    std::fs::write(&broken, "{\"defaultAction\": ").unwrap();
    let opt_bad = format!("seccomp={}", bad.display());
    let opt_broken = format!("seccomp={}", broken.display());
    for (flags, needle) in [
        (
            vec!["--cap-add", "NET_ADMN"],
            "--cap-add NET_ADMN: unknown capability",
        ),
        (
            vec!["--cap-drop", "nope"],
            "--cap-drop nope: unknown capability",
        ),
        (
            vec!["--security-opt", "apparmor=unconfined"],
            "unknown --security-opt",
        ),
        (
            vec!["--security-opt", &opt_bad],
            "syscalls[0]: unknown action",
        ),
        (vec!["--security-opt", &opt_broken], "not a seccomp profile"),
        (
            vec!["--security-opt", "seccomp=/no/such/profile.json"],
            "/no/such/profile.json",
        ),
        (vec!["--user", "nobody"], "--user nobody"),
        (
            vec!["--userns", "--userns-size", "100", "--user", "1000"],
            "not mapped by --userns",
        ),
    ] {
        let mut args = vec!["run", "--rm", "--net=bridge"];
        args.extend_from_slice(&flags);
        args.extend_from_slice(&["--", "true"]);
        let r = env.tether(&args);
        assert_eq!(r.code, Some(125), "{flags:?}: {r:#?}");
        r.fails_with(needle);
        assert_eq!(env.state_entries(), Vec::<String>::new(), "{flags:?}");
    }
    env.assert_clean();
}
