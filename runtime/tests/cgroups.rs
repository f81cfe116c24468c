//! Limits, accounting and the freezer, through the real cgroup files of whichever version tether
//! picked (v1 on a hybrid host, v2 on a unified one), plus the v2 backend forced on a hybrid host.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn stats(env: &Env, name: &str) -> Value {
    let r = env.tether(&["stats", "--json", name]);
    let v: Value = serde_json::from_str(r.ok()).unwrap();
    v[0].clone()
}

fn cgroup_paths(env: &Env, name: &str) -> (String, Vec<PathBuf>) {
    let cg = env.inspect(name)["cgroup"].clone();
    let version = cg["version"].as_str().unwrap().to_string();
    let paths = cg["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect();
    (version, paths)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn limits_are_written_to_the_cgroup() {
    require_plugins(&["none"]);
    let env = Env::new();
    env.run_detached(
        "lim",
        &[
            "--net=none",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            "--cpuset-cpus",
            "0",
            "--pids-limit",
            "50",
        ],
        &["sleep", "30"],
    );
    let cg = env.inspect("lim")["cgroup"].clone();
    let path = |k: &str| PathBuf::from(cg["paths"][k].as_str().unwrap());
    let pid = env.pid("lim").to_string();
    match cg["version"].as_str().unwrap() {
        "v1" => {
            assert_eq!(
                read(&path("memory").join("memory.limit_in_bytes")),
                (64u64 << 20).to_string()
            );
            assert_eq!(read(&path("cpu").join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read(&path("cpu").join("cpu.cfs_period_us")), "100000");
            assert_eq!(read(&path("cpu").join("cpu.shares")), "512");
            assert_eq!(read(&path("cpuset").join("cpuset.cpus")), "0");
            assert_eq!(read(&path("pids").join("pids.max")), "50");
            for dir in cg["paths"].as_object().unwrap().values() {
                let procs = read(&Path::new(dir.as_str().unwrap()).join("cgroup.procs"));
                assert!(
                    procs.lines().any(|l| l == pid),
                    "{dir} lacks the container's pid"
                );
            }
        }
        "v2" => {
            let d = path("unified");
            assert_eq!(read(&d.join("memory.max")), (64u64 << 20).to_string());
            assert_eq!(read(&d.join("cpu.max")), "50000 100000");
            assert_eq!(read(&d.join("cpu.weight")), "20");
            assert_eq!(read(&d.join("cpuset.cpus")), "0");
            assert_eq!(read(&d.join("pids.max")), "50");
            assert!(read(&d.join("cgroup.procs")).lines().any(|l| l == pid));
        }
        v => panic!("unknown cgroup version {v}"),
    }
    let s = stats(&env, "lim");
    assert_eq!(s["memoryLimit"], 64u64 << 20);
    assert_eq!(s["pidsLimit"], 50);
    env.tether(&["rm", "-f", "lim"]).ok();
    env.assert_clean();
}

#[test]
fn memory_limit_oom_kills_and_inspect_shows_it() {
    require_plugins(&["none"]);
    let env = Env::new();
    // `tail` keeps the whole of an endless line in memory.
    let out = env.tether(&[
        "run",
        "--name",
        "oom",
        "--net=none",
        "--memory",
        "16m",
        "--",
        "sh",
        "-c",
        "tail /dev/zero; echo survived",
    ]);
    assert_eq!(out.code, Some(0), "sh itself outlives tail: {out:#?}");
    assert!(out.stdout.contains("survived"));
    let st = env.inspect("oom")["state"].clone();
    assert_eq!(st["oomKilled"], true, "{st}");
    assert_eq!(st["status"], "exited");
    // Without the limit the same allocation would simply succeed for a while: prove the limit is
    // what killed it by a direct kill status.
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--memory",
        "16m",
        "--",
        "tail",
        "/dev/zero",
    ]);
    assert_eq!(out.code, Some(137), "SIGKILL by the OOM killer: {out:#?}");
    env.tether(&["rm", "oom"]).ok();
    env.assert_clean();
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    require_plugins(&["none"]);
    let env = Env::new();
    let script = "for i in $(seq 40); do sleep 5 & echo started $i; done";
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--pids-limit",
        "10",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let started = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("started"))
        .count();
    assert!(
        started < 10,
        "{started} processes started under --pids-limit 10: {out:#?}"
    );
    assert!(out.stderr.to_lowercase().contains("fork"), "{out:#?}");
    // The same loop without a limit starts them all.
    let out = env.tether(&["run", "--rm", "--net=none", "--", "sh", "-c", script]);
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("started"))
            .count(),
        40
    );
    env.assert_clean();
}

fn ticks(env: &Env, name: &str) -> usize {
    env.tether(&["logs", name]).stdout.lines().count()
}

#[test]
fn pause_freezes_and_unpause_resumes() {
    require_plugins(&["none"]);
    let env = Env::new();
    env.run_detached(
        "p",
        &["--net=none"],
        &["sh", "-c", "while :; do echo tick; sleep 0.05; done"],
    );
    assert!(wait_for(Duration::from_secs(5), || ticks(&env, "p") > 3));
    env.tether(&["pause", "p"]).ok();
    assert_eq!(env.inspect("p")["state"]["status"], "paused");
    let frozen = ticks(&env, "p");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        ticks(&env, "p"),
        frozen,
        "the counter advanced while paused"
    );
    env.tether(&["exec", "p", "true"]).fails_with("paused");
    env.tether(&["unpause", "p"]).ok();
    assert_eq!(env.inspect("p")["state"]["status"], "running");
    assert!(wait_for(Duration::from_secs(5), || ticks(&env, "p") > frozen + 3));
    // A paused container can still be removed.
    env.tether(&["pause", "p"]).ok();
    env.tether(&["rm", "-f", "p"]).ok();
    env.assert_clean();
}

#[test]
fn stats_reports_non_zero_figures() {
    require_plugins(&["none"]);
    let env = Env::new();
    env.run_detached(
        "s",
        &["--net=none", "--memory", "64m"],
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; sleep 30",
        ],
    );
    assert!(wait_for(Duration::from_secs(10), || {
        stats(&env, "s")["cpuUsageNs"].as_u64().unwrap() > 10_000_000
    }));
    let s = stats(&env, "s");
    assert!(s["memoryUsage"].as_u64().unwrap() > 0, "{s}");
    assert!(s["pids"].as_u64().unwrap() >= 1, "{s}");
    if let Some(peak) = s["memoryPeak"].as_u64() {
        assert!(peak >= s["memoryUsage"].as_u64().unwrap(), "{s}");
    }
    let table = env.tether(&["stats", "s"]);
    assert!(table.ok().contains("MEM PEAK"));
    env.tether(&["rm", "-f", "s"]).ok();
}

#[test]
fn cpus_caps_cpu_use() {
    require_plugins(&["none"]);
    let env = Env::new();
    env.run_detached(
        "cpu",
        &["--net=none", "--cpus", "0.2"],
        &["sh", "-c", "while :; do :; done"],
    );
    let usage = || stats(&env, "cpu")["cpuUsageNs"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (u0, t0) = (usage(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (u1, t1) = (usage(), Instant::now());
    let cpus = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    // A busy loop would use a whole CPU; the quota holds it at 0.2 (CFS slack allowed).
    assert!(cpus < 0.3, "used {cpus:.3} CPUs under --cpus 0.2");
    assert!(
        cpus > 0.05,
        "used only {cpus:.3} CPUs: is the loop running?"
    );
    env.tether(&["rm", "-f", "cpu"]).ok();
    env.assert_clean();
}

#[test]
fn v2_backend_freezes_accounts_and_cleans_up() {
    require_plugins(&["none"]);
    let env = Env::new();
    let r = env.tether(&[
        "--cgroup-manager",
        "v2",
        "run",
        "-d",
        "--name",
        "v2",
        "--net=none",
        "--",
        "sh",
        "-c",
        "while :; do echo tick; sleep 0.05; done",
    ]);
    r.ok();
    let (version, paths) = cgroup_paths(&env, "v2");
    assert_eq!(version, "v2");
    let dir = &paths[0];
    let pid = env.pid("v2").to_string();
    assert!(read(&dir.join("cgroup.procs")).lines().any(|l| l == pid));
    env.tether(&["pause", "v2"]).ok();
    assert_eq!(read(&dir.join("cgroup.freeze")), "1");
    let frozen = ticks(&env, "v2");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ticks(&env, "v2"), frozen);
    env.tether(&["unpause", "v2"]).ok();
    assert!(wait_for(Duration::from_secs(5), || ticks(&env, "v2") > frozen + 2));
    assert!(stats(&env, "v2")["cpuUsageNs"].as_u64().unwrap() > 0);
    env.tether(&["rm", "-f", "v2"]).ok();
    assert!(!dir.exists());
    env.assert_clean();
}

/// The command runs in its cgroups from its first instruction: the init joins them itself before
/// it execs (v1, also from a new user namespace) or is born in them (v2), rather than being moved
/// in by tether.
#[test]
fn the_command_starts_in_its_cgroups() {
    require_plugins(&["none"]);
    let env = Env::new();
    let cases: [(&str, &[&str], &[&str]); 3] = [
        ("auto", &[], &[]),
        ("userns", &[], &["--userns"]),
        // A private cgroupns (v2's default) would show "/": the host's view shows the path.
        ("v2", &["--cgroup-manager", "v2"], &["--cgroupns", "host"]),
    ];
    for (name, global, extra) in cases {
        let mut args: Vec<&str> = global.to_vec();
        args.extend(["run", "--name", name, "--net=none"]);
        args.extend_from_slice(extra);
        args.extend(["--", "cat", "/proc/self/cgroup"]);
        let out = env.tether(&args).ok().to_string();
        let st = env.inspect(name);
        let leaf = format!("/{}/{}", env.cgroup_parent, st["id"].as_str().unwrap());
        let version = st["cgroup"]["version"].as_str().unwrap();
        let lines: Vec<(&str, &str)> = out
            .lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ':').skip(1);
                Some((it.next()?, it.next()?))
            })
            .collect();
        let wanted: Vec<String> = match version {
            "v1" => st["cgroup"]["paths"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect(),
            _ => vec![String::new()],
        };
        assert!(!wanted.is_empty());
        for ctrl in &wanted {
            let (_, path) = lines
                .iter()
                .find(|(c, _)| c.split(',').any(|x| x == ctrl))
                .unwrap_or_else(|| panic!("{name}: no {ctrl:?} line in {out}"));
            assert!(
                path.ends_with(&leaf),
                "{name} ({version}): {ctrl:?} is {path}, not {leaf}:\n{out}"
            );
        }
        env.tether(&["rm", name]).ok();
    }
    env.assert_clean();
}

/// `rm -f` and `stop` wait for the init to die, not for a v1 freezer, which cannot freeze tasks
/// that are busy exiting (that used to cost its 5 s patience on every kill).
#[test]
fn kill_paths_return_once_the_container_is_dead() {
    require_plugins(&["none"]);
    let env = Env::new();
    let commands: [&[&str]; 2] = [&["sleep", "100"], &["sh", "-c", "sleep 100 & sleep 100"]];
    for (i, command) in commands.iter().enumerate() {
        let name = format!("k{i}");
        // PID 1 with no handler ignores SIGTERM: stop has to wait its grace period, then kill.
        env.run_detached(&name, &["--net=none"], command);
        let t = Instant::now();
        env.tether(&["stop", "-t", "1", &name]).ok();
        let took = t.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(3),
            "stop -t 1 of {command:?} took {took:?}"
        );
        env.tether(&["rm", &name]).ok();

        env.run_detached(&name, &["--net=none"], command);
        let t = Instant::now();
        env.tether(&["rm", "-f", &name]).ok();
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "rm -f of {command:?} took {took:?}"
        );
    }
    env.assert_clean();
}
