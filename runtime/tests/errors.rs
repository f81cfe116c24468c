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

fn odd_network(env: &Env) {
    std::fs::create_dir_all(&env.config_dir).unwrap();
    std::fs::write(
        env.config_dir.join("odd.conflist"),
        r#"{"cniVersion":"1.0.0","name":"odd","plugins":[{"type":"no-such-plugin"}]}"#,
    )
    .unwrap();
}

#[test]
fn missing_plugin_binary_names_the_binary_and_the_path() {
    let env = Env::new();
    odd_network(&env);
    let e = fails_cleanly(&env, &["run", "--net=odd", "--", "true"], "no-such-plugin");
    // Exactly the CNI_PATH given: no default directories added to it.
    let searched = format!("[{}]", netns_fixtures::bin_dir().display());
    assert!(e.contains(&searched), "{e}");
    assert!(e.contains("--cni-path"), "says what to do: {e}");

    // Without any CNI_PATH: the directory tether is in, then /opt/cni/bin.
    let mut c = env.cmd();
    c.env_remove("CNI_PATH")
        .args(["run", "--net=odd", "--", "true"]);
    let r = run_with_timeout(c, std::time::Duration::from_secs(60));
    let tether_dir = std::path::Path::new(TETHER).parent().unwrap().display();
    let searched = format!("[{tether_dir}:/opt/cni/bin]");
    assert!(r.fails_with("no-such-plugin").contains(&searched), "{r:#?}");
    assert_eq!(env.state_entries(), Vec::<String>::new());
}

/// A directory with a `bridge` that fails ADD (and DEL too with `fail_del`) with its own CNI
/// error, and our real host-local beside it.
fn fake_bridge_dir(env: &Env, name: &str, fail_del: bool) -> std::path::PathBuf {
    let dir = env.host.dir().join(name);
    std::fs::create_dir(&dir).unwrap();
    let del = if fail_del {
        ""
    } else {
        "[ \"$CNI_COMMAND\" = DEL ] && exit 0\n"
    };
    let script = format!(
        "#!/bin/sh\n{del}echo '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"fake bridge from the explicit CNI_PATH\"}}'\nexit 1\n"
    );
    let fake = dir.join("bridge");
    std::fs::write(&fake, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(
        netns_fixtures::bin_dir().join("host-local"),
        dir.join("host-local"),
    )
    .unwrap();
    dir
}

#[test]
fn an_explicit_cni_path_wins_over_the_plugins_next_to_tether() {
    require_plugins(&["bridge", "host-local"]);
    let env = Env::new();
    let dir = fake_bridge_dir(&env, "fake-cni", false);
    let mut c = env.cmd();
    c.env("CNI_PATH", &dir).args(["run", "--", "true"]);
    let r = run_with_timeout(c, std::time::Duration::from_secs(60));
    assert_eq!(r.code, Some(125), "{r:#?}");
    r.fails_with("fake bridge from the explicit CNI_PATH");
    env.assert_clean();
    // The same through --cni-path, which also beats the environment.
    let mut c = env.cmd();
    c.args(["--cni-path", dir.to_str().unwrap(), "run", "--", "true"]);
    run_with_timeout(c, std::time::Duration::from_secs(60))
        .fails_with("fake bridge from the explicit CNI_PATH");
    env.assert_clean();
}

#[test]
fn a_failed_start_whose_del_fails_keeps_its_record_for_rm() {
    require_plugins(&["bridge", "host-local"]);
    let env = Env::new();
    let dir = fake_bridge_dir(&env, "broken-cni", true);
    let mut c = env.cmd();
    c.env("CNI_PATH", &dir)
        .args(["run", "--name", "half", "--", "true"]);
    let r = run_with_timeout(c, std::time::Duration::from_secs(60));
    assert_eq!(r.code, Some(125), "{r:#?}");
    r.fails_with("fake bridge from the explicit CNI_PATH");
    assert!(
        r.stderr.contains("tether rm -f half"),
        "says what to do: {r:#?}"
    );
    // The pinned namespace DEL never reached is still recorded...
    let st = env.inspect("half");
    assert_eq!(st["state"]["status"], "exited", "{st:#}");
    let pinned = st["network"]["netnsPath"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&pinned).exists(), "{st:#}");
    // ...so `rm` with working plugins finishes the job.
    env.tether(&["rm", "-f", "half"]).ok();
    env.assert_clean();
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
