//! ADD on an overlay network against ADD on a plain bridge network, on one throwaway host
//! (a network namespace; nothing of the real host is touched), through the real protocol.
//!
//! ```text
//!  for each round:  fresh host netns, lease.json written by hand (as the agent would)
//!    for i in 0..N: ADD b<i> on "plain" (bridge bench0 + host-local, ipMasq)     timed
//!                   ADD o<i> on "ov1"   (overlay -> bridge tob-42 + host-local)   timed
//!    DEL everything, check that nothing is left
//!  report: the first ADD of each (it creates the bridge and the NAT chain) and the median and
//!          p90 of the others, and overlay - plain of the medians
//! ```
//!
//! Interleaved, so both sides see the same load; each side's bridge fills the same way.
//! Run (as root, release binaries; see README "Overlay (multi-host)"):
//!
//! ```sh
//! cargo build --release -p tether-overlay -p tether-bridge -p host-local
//! sudo target/release/examples/add_bench [N] [ROUNDS]      # default 50 3
//! ```

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use netns_fixtures::{Netns, bin_dir};
use serde_json::{Value, json};
use tether_overlay_state::{HostLease, NetworkDir};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One plugin exec, timed from spawn to exit (blocking wait: no polling quantum).
fn exec(host: &Netns, bin: &Path, env: &[(&str, String)], stdin: &Value) -> (f64, bool, String) {
    let mut cmd = host.command(bin);
    cmd.env_clear()
        .env("PATH", PATH)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().expect("spawn plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    (
        ms,
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn median_p90(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: add_bench [N] [ROUNDS]"))
        .collect();
    let n = args.first().copied().unwrap_or(50);
    let rounds = args.get(1).copied().unwrap_or(3);
    let bins = bin_dir();
    let (overlay, bridge) = (bins.join("overlay"), bins.join("bridge"));
    for b in [&overlay, &bridge, &bins.join("host-local")] {
        assert!(b.is_file(), "{} is missing: build it first", b.display());
    }
    let (mut plain_rest, mut ov_rest, mut plain_first, mut ov_first) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let host = Netns::new().expect("host netns (run as root)");
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("overlay");
        NetworkDir::new(&state, "ov1")
            .unwrap()
            .write_lease(&HostLease {
                network: "ov1".into(),
                overlay: "10.200.0.0/16".parse().unwrap(),
                subnet: "10.200.16.0/20".parse().unwrap(),
                mtu: 1450,
                vni: 42,
                backend: "vxlan".into(),
                public_ip: "192.168.50.1".parse().unwrap(),
                agent_pid: std::process::id(),
            })
            .unwrap();
        let plain = json!({
            "cniVersion": "1.0.0", "name": "plain", "type": "bridge", "bridge": "bench0",
            "isGateway": true, "ipMasq": true, "mtu": 1450, "hairpinMode": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/20"}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": tmp.path().join("ipam")},
        });
        let mut ov =
            json!({"cniVersion": "1.0.0", "name": "ov1", "type": "overlay", "network": "ov1"});
        // For a profile: the overlay without its masquerading (and so without its iptables).
        if std::env::var_os("BENCH_OVERLAY_NO_MASQ").is_some() {
            ov["ipMasq"] = json!(false);
        }
        let ctrs: Vec<(Netns, Netns)> = (0..n)
            .map(|_| (Netns::new().unwrap(), Netns::new().unwrap()))
            .collect();
        let env = |cmd: &str, cid: String, ns: Option<&Netns>| {
            let mut e = vec![
                ("CNI_COMMAND", cmd.to_string()),
                ("CNI_CONTAINERID", cid),
                ("CNI_IFNAME", "eth0".to_string()),
                ("CNI_PATH", bins.display().to_string()),
                ("TETHER_OVERLAY_DIR", state.display().to_string()),
            ];
            if let Some(ns) = ns {
                e.push(("CNI_NETNS", ns.path().display().to_string()));
            }
            e
        };
        for (i, (cp, co)) in ctrs.iter().enumerate() {
            let e = env("ADD", format!("b{i}"), Some(cp));
            let (ms, ok, out) = exec(&host, &bridge, &e, &plain);
            assert!(ok, "plain ADD {i}: {out}");
            if i == 0 {
                plain_first.push(ms)
            } else {
                plain_rest.push(ms)
            }
            let e = env("ADD", format!("o{i}"), Some(co));
            let (ms, ok, out) = exec(&host, &overlay, &e, &ov);
            assert!(ok, "overlay ADD {i}: {out}");
            if i == 0 {
                ov_first.push(ms)
            } else {
                ov_rest.push(ms)
            }
        }
        for i in 0..n {
            let e = env("DEL", format!("b{i}"), None);
            assert!(exec(&host, &bridge, &e, &plain).1, "plain DEL {i}");
            let e = env("DEL", format!("o{i}"), None);
            assert!(exec(&host, &overlay, &e, &ov).1, "overlay DEL {i}");
        }
        let links = host.sh("ip", &["-o", "link"]);
        assert_eq!(
            links.lines().count(),
            1,
            "round {round}: links left: {links}"
        );
        let nat = host.sh("iptables-save", &["-t", "nat"]);
        assert!(
            !nat.contains("TETHER-MASQ"),
            "round {round}: NAT left: {nat}"
        );
        eprintln!("round {} of {rounds} done", round + 1);
    }
    let (pm, p9) = median_p90(&mut plain_rest);
    let (om, o9) = median_p90(&mut ov_rest);
    let (pf, _) = median_p90(&mut plain_first);
    let (of, _) = median_p90(&mut ov_first);
    println!("ADD, {n} containers x {rounds} rounds, interleaved (ms):");
    println!("  plain bridge: first {pf:.2}, then median {pm:.2}, p90 {p9:.2}");
    println!("  overlay:      first {of:.2}, then median {om:.2}, p90 {o9:.2}");
    println!("  overlay - plain, medians: {:+.2} ms", om - pm);
}
