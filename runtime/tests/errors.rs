//! Bad input: each a clear error, exit code 125, and nothing half-made.

mod common;
use common::*;

#[track_caller]
fn fails_cleanly(env: &Env, args: &[&str], needle: &str) -> String {
    let r = env.tether(args);
    assert_eq!(r.code, Some(125), "{r:#?}");
    r.fails_with(needle);
    assert_eq!(
        env.state_entries(),
        Vec::<String>::new(),
        "state left after {args:?}"
    );
    assert_eq!(
        env.cgroup_dirs(),
        Vec::<std::path::PathBuf>::new(),
        "cgroups left after {args:?}"
    );
    assert!(
        !env.host_links().iter().any(|l| l.starts_with("veth")),
        "veth left after {args:?}"
    );
    assert_eq!(env.leases(), Vec::<String>::new());
    r.stderr
}

#[test]
fn unknown_network() {
    let env = Env::new();
    let e = fails_cleanly(
        &env,
        &["run", "--net=nowhere", "--", "true"],
        "unknown network",
    );
    assert!(e.contains("tether network create"), "{e}");
}

#[test]
fn malformed_limits() {
    let env = Env::new();
    let e = fails_cleanly(&env, &["run", "--memory", "64q", "--", "true"], "--memory");
    assert!(e.contains("64m"), "says what a valid value looks like: {e}");
    fails_cleanly(&env, &["run", "--memory", "1m", "--", "true"], "minimum");
    fails_cleanly(
        &env,
        &[
            "run",
            "--memory",
            "64m",
            "--memory-swap",
            "32m",
            "--",
            "true",
        ],
        "--memory-swap",
    );
    fails_cleanly(&env, &["run", "--cpus", "zero", "--", "true"], "--cpus");
    fails_cleanly(
        &env,
        &["run", "--cpuset-cpus", "3-1", "--", "true"],
        "--cpuset-cpus",
    );
    fails_cleanly(
        &env,
        &["run", "--pids-limit", "0", "--", "true"],
        "--pids-limit",
    );
    fails_cleanly(
        &env,
        &["run", "-p", "80", "--", "true"],
        "HOSTPORT:CONTAINERPORT",
    );
}

#[test]
fn missing_command() {
    let env = Env::new();
    let r = env.tether(&["run", "--net=none"]);
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("COMMAND"), "{r:#?}");
    assert_eq!(env.state_entries(), Vec::<String>::new());
}

#[test]
fn name_already_in_use() {
    require_plugins(&["none"]);
    let env = Env::new();
    env.run_detached("dup", &["--net=none"], &["sleep", "30"]);
    let r = env.tether(&["run", "--name", "dup", "--net=none", "--", "true"]);
    assert_eq!(r.code, Some(125));
    r.fails_with("already in use");
    let r = env.tether(&["run", "-d", "--name", "dup", "--net=none", "--", "true"]);
    r.fails_with("already in use");
    assert_eq!(env.state_entries().len(), 1);
    env.tether(&["rm", "-f", "dup"]).ok();
    env.assert_clean();
}

#[test]
fn container_mode_with_unknown_or_stopped_target() {
    require_plugins(&["none"]);
    let env = Env::new();
    fails_cleanly(
        &env,
        &["run", "--net=container:ghost", "--", "true"],
        "no such container",
    );
    env.tether(&["run", "--name", "stopped", "--net=none", "--", "true"])
        .ok();
    let r = env.tether(&["run", "--net=container:stopped", "--", "true"]);
    assert_eq!(r.code, Some(125));
    r.fails_with("exited");
    assert_eq!(env.state_entries().len(), 1, "only the stopped container");
    env.tether(&["rm", "stopped"]).ok();
    env.assert_clean();
}

#[test]
fn missing_plugin_binary_names_the_binary_and_the_path() {
    let env = Env::new();
    std::fs::create_dir_all(&env.config_dir).unwrap();
    std::fs::write(
        env.config_dir.join("odd.conflist"),
        r#"{"cniVersion":"1.0.0","name":"odd","plugins":[{"type":"no-such-plugin"}]}"#,
    )
    .unwrap();
    let e = fails_cleanly(&env, &["run", "--net=odd", "--", "true"], "no-such-plugin");
    assert!(
        e.contains("/usr/lib/cni") && e.contains("/opt/cni/bin"),
        "{e}"
    );
}

#[test]
fn port_already_published() {
    let env = Env::new();
    env.run_detached("p1", &["-p", "8081:80"], &["sleep", "30"]);
    let rules = env.nat_rules();
    let r = env.tether(&["run", "--name", "p2", "-p", "8081:81", "--", "true"]);
    assert_eq!(r.code, Some(125));
    r.fails_with("already published");
    assert_eq!(env.state_entries().len(), 1);
    assert_eq!(env.leases().len(), 1);
    assert_eq!(
        env.nat_rules(),
        rules,
        "nat rules changed by the failed run"
    );
    // A host socket on the port counts too.
    let l = env
        .host
        .run(|| std::net::TcpListener::bind("0.0.0.0:8082").unwrap());
    let r = env.tether(&["run", "-p", "8082:80", "--", "true"]);
    r.fails_with("in use on the host");
    drop(l);
    env.tether(&["rm", "-f", "p1"]).ok();
    env.assert_clean();
}

#[test]
fn unreadable_rootfs_and_bad_workdir() {
    let env = Env::new();
    fails_cleanly(
        &env,
        &["run", "--rootfs", "/nonexistent/root", "--", "true"],
        "--rootfs",
    );
    fails_cleanly(&env, &["run", "-w", "relative", "--", "true"], "absolute");
}
