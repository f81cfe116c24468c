//! Detached runs, ps/logs/stop/kill/rm, --rm, and recovery after `tether run` itself is killed.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn detached_container_lifecycle() {
    require_plugins(&["none"]);
    let env = Env::new();
    let id = env.run_detached(
        "d",
        &["--net=none", "-e", "GREETING=hi there", "-w", "/tmp"],
        &["sh", "-c", "echo $GREETING from $(pwd); exec sleep 30"],
    );
    assert_eq!(id.len(), 64);
    let ps = env.tether(&["ps"]);
    assert!(
        ps.ok()
            .lines()
            .any(|l| l.starts_with(&id[..12]) && l.contains("running")),
        "{}",
        ps.stdout
    );
    assert!(wait_for(Duration::from_secs(5), || {
        env.tether(&["logs", "d"])
            .stdout
            .contains("hi there from /tmp")
    }));
    let st = env.inspect("d");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["state"]["status"], "running");
    for k in ["pid", "net", "mnt", "uts", "ipc"] {
        assert!(st["namespaces"][k].as_str().unwrap().starts_with(k), "{st}");
    }
    let cgroups: Vec<String> = st["cgroup"]["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(cgroups.iter().all(|p| std::path::Path::new(p).is_dir()));
    // An id prefix works as a name.
    env.tether(&["inspect", &id[..8]]).ok();
    // Stop: `sleep` as PID 1 ignores SIGTERM, so this takes the SIGKILL path after -t.
    env.tether(&["stop", "-t", "1", "d"]).ok();
    let st = env.inspect("d");
    assert_eq!(st["state"]["status"], "exited");
    assert_eq!(st["state"]["exitCode"], 137);
    assert!(
        cgroups.iter().all(|p| !std::path::Path::new(p).exists()),
        "cgroups outlived stop"
    );
    assert!(!env.tether(&["ps"]).stdout.contains(&id[..12]));
    assert!(env.tether(&["ps", "-a"]).stdout.contains("exited (137)"));
    env.tether(&["rm", "d"]).ok();
    env.assert_clean();
}

#[test]
fn exit_codes_and_rm_flag() {
    require_plugins(&["none"]);
    let env = Env::new();
    let r = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(r.code, Some(3));
    assert_eq!(r.stdout, "out\n");
    assert!(r.stderr.contains("err"));
    env.assert_clean();
    // Without --rm the exited container stays until `rm`.
    env.tether(&["run", "--name", "keep", "--net=none", "--", "true"])
        .ok();
    assert_eq!(env.inspect("keep")["state"]["exitCode"], 0);
    env.tether(&["rm", "keep"]).ok();
    env.assert_clean();
    // A command that does not exist: 127 and nothing left.
    let r = env.tether(&["run", "--rm", "--net=none", "--", "no-such-command"]);
    assert_eq!(r.code, Some(125));
    assert!(r.stderr.contains("executable file not found"), "{r:#?}");
    env.assert_clean();
}

#[test]
fn kill_sends_signals_and_rm_refuses_running_containers() {
    require_plugins(&["none"]);
    let env = Env::new();
    env.run_detached(
        "k",
        &["--net=none"],
        &[
            "sh",
            "-c",
            "trap 'echo got-usr1' USR1; while :; do sleep 0.1; done",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    env.tether(&["kill", "-s", "USR1", "k"]).ok();
    assert!(wait_for(Duration::from_secs(5), || env
        .tether(&["logs", "k"])
        .stdout
        .contains("got-usr1")));
    env.tether(&["rm", "k"]).fails_with("tether rm -f k");
    env.tether(&["kill", "k"]).ok();
    assert!(wait_for(
        Duration::from_secs(5),
        || env.inspect("k")["state"]["status"] == "exited"
    ));
    env.tether(&["rm", "k"]).ok();
    env.assert_clean();
}

#[test]
fn kill_9_of_tether_run_then_rm_cleans_everything() {
    let env = Env::new();
    let mut c = env.cmd();
    c.args(["run", "--name", "orphan", "--", "sleep", "60"]);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    assert!(wait_for(Duration::from_secs(20), || {
        env.tether(&["ps"]).stdout.contains("orphan")
            && env.inspect("orphan")["state"]["status"] == "running"
    }));
    let st = env.inspect("orphan");
    assert!(
        st["network"]["result"]["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.88.")
    );
    assert!(!env.leases().is_empty());
    assert!(env.host_links().iter().any(|l| l.starts_with("veth")));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The container outlives its tether; its state says so.
    assert_eq!(env.inspect("orphan")["state"]["status"], "running");
    env.tether(&["rm", "-f", "orphan"]).ok();
    env.assert_clean();
}

#[test]
fn container_that_exits_after_tether_died_is_cleaned_by_rm_or_prune() {
    let env = Env::new();
    for name in ["gone1", "gone2"] {
        let mut c = env.cmd();
        c.args(["run", "--name", name, "--", "sleep", "1"]);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        assert!(wait_for(Duration::from_secs(20), || {
            env.tether(&["ps"]).stdout.contains(name)
        }));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(wait_for(Duration::from_secs(10), || {
        env.inspect("gone1")["state"]["status"] == "dead"
            && env.inspect("gone2")["state"]["status"] == "dead"
    }));
    assert_eq!(env.leases().len(), 2);
    env.tether(&["rm", "gone1"]).ok();
    assert_eq!(env.leases().len(), 1);
    // prune repairs the network without removing the container's record.
    let out = env.tether(&["network", "prune"]);
    assert!(out.ok().contains("gone2"), "{out:#?}");
    assert_eq!(env.leases(), Vec::<String>::new());
    let per_container: Vec<String> = env
        .nat_rules()
        .into_iter()
        .filter(|r| is_per_container_rule(r))
        .collect();
    assert_eq!(per_container, Vec::<String>::new());
    assert_eq!(env.inspect("gone2")["state"]["status"], "exited");
    env.tether(&["rm", "gone2"]).ok();
    env.assert_clean();
}

#[test]
fn foreground_run_forwards_signals_and_logs_follow() {
    require_plugins(&["none"]);
    let env = Env::new();
    let mut c = env.cmd();
    c.args([
        "run",
        "--name",
        "fg",
        "--net=none",
        "--",
        "sh",
        "-c",
        "trap 'echo got-term; exit 5' TERM; while :; do sleep 0.1; done",
    ]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let child = c.spawn().unwrap();
    assert!(wait_for(Duration::from_secs(10), || {
        env.tether(&["ps"]).stdout.contains("fg")
    }));
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5), "the container's exit code");
    assert_eq!(text(&out), "got-term\n");
    env.tether(&["rm", "fg"]).ok();
    // logs -f follows a detached container until it exits.
    env.run_detached(
        "f",
        &["--net=none"],
        &["sh", "-c", "echo one; sleep 0.5; echo two"],
    );
    let out = env.tether(&["logs", "-f", "f"]);
    assert_eq!(out.ok(), "one\ntwo\n");
    env.tether(&["rm", "f"]).ok();
    env.assert_clean();
}

#[track_caller]
fn assert_nothing_left(env: &Env, what: &str) {
    env.assert_clean();
    assert_eq!(
        env.entries_under("netns"),
        Vec::<String>::new(),
        "pins left {what}"
    );
    assert_eq!(
        env.entries_under("containers"),
        Vec::<String>::new(),
        "container files left {what}"
    );
}

/// `tether run` SIGKILLed at each step of its creation (by its own test hook, as a kill at that
/// moment would): whatever it left, `rm` (when it left a record) and `network prune` remove,
/// pinned namespace mounts included.
#[test]
fn tether_run_killed_at_any_early_step_leaves_nothing_after_rm_and_prune() {
    let env = Env::new();
    // (step, whether the record exists by then)
    let steps = [
        ("reserved", false),
        ("write-tmp", false),
        ("cgroup", true),
        ("cloned", true),
        ("pin-file", true),
        ("pinned", true),
        ("saved", true),
        ("added", true),
    ];
    for net in ["none", "bridge"] {
        for (step, recorded) in steps {
            let what = format!("after a kill at {step} with --net={net}");
            let mut c = env.cmd();
            c.env("TETHER_TEST_KILL_AT", step).args([
                "run",
                "--name",
                "k",
                &format!("--net={net}"),
                "--",
                "true",
            ]);
            let r = run_with_timeout(c, Duration::from_secs(30));
            assert_eq!(
                r.code, None,
                "tether should have been killed {what}: {r:#?}"
            );
            // With the built-in network the first replaced file can be the plugin version
            // cache rather than the record; either way nothing of a container may remain.
            let has_record = recorded || env.tether(&["inspect", "k"]).code == Some(0);
            if has_record {
                env.tether(&["rm", "k"]).ok();
            } else {
                env.tether(&["rm", "k"]).fails_with("no such container");
            }
            env.tether(&["network", "prune"]).ok();
            assert_nothing_left(&env, &what);
        }
    }
    // What an older tether could leave: a pinned namespace whose record is gone.
    let mut c = env.cmd();
    c.env("TETHER_TEST_KILL_AT", "pinned").args([
        "run",
        "--name",
        "old",
        "--net=none",
        "--",
        "true",
    ]);
    assert_eq!(run_with_timeout(c, Duration::from_secs(30)).code, None);
    let id = env.inspect("old")["id"].as_str().unwrap().to_string();
    assert!(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&id),
        "the pin is mounted"
    );
    let rec = env.inspect("old");
    std::fs::remove_dir_all(env.root.join("containers").join(&id)).unwrap();
    let out = env.tether(&["network", "prune"]);
    assert!(
        out.ok().contains("orphaned network namespace pin"),
        "{out:#?}"
    );
    // The cgroup it had is the record's to remove; gone with the record, so by hand here.
    for d in rec["cgroup"]["paths"].as_object().unwrap().values() {
        let d = std::path::Path::new(d.as_str().unwrap());
        let _ = std::fs::remove_dir(d);
        let _ = std::fs::remove_dir(d.parent().unwrap());
    }
    assert_nothing_left(&env, "after the sweep of an orphaned pin");
}

/// SIGKILL at random moments of the first milliseconds of `tether run` (the 0-2 ms):
/// `rm -f` of whatever is listed, then `network prune`, leave nothing.
#[test]
fn tether_run_killed_in_its_first_milliseconds_is_undone_by_rm_and_prune() {
    let env = Env::new();
    let mut seed = std::process::id() as u64;
    for i in 0..10u64 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_micros((seed >> 33) % 3000 + i * 100);
        let mut c = env.cmd();
        c.args(["run", "--net=none", "--", "true"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait().unwrap();
    }
    let ps = env.tether(&["ps", "-a", "-q"]);
    for id in ps.ok().split_whitespace() {
        env.tether(&["rm", "-f", id]).ok();
    }
    env.tether(&["network", "prune"]).ok();
    assert_nothing_left(&env, "after random early kills");
}
