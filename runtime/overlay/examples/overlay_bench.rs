//! The overlay benchmark (`scripts/overlay-bench.sh` builds and runs it), in throwaway namespaces
//! built by the tests' cluster fixture:
//!
//! ```text
//!  throughput   iperf3 container(host0) → container(host1), 3 s, over
//!                 a) the agent's overlay   (tvx-50: neighbour + FDB + route from the agent)
//!                 b) the same VXLAN set up by hand with `ip` (vxh, VNI 60, port 4789, same
//!                    bridge + veth + container layout): the kernel's own cost
//!               in ABBA order, 9 rounds of 2 s; medians, bests and their ratios
//!  convergence  N-1 agents converged; start the N-th agent: time until every other host's
//!               container has pinged its container (lease → plugin ADD → ping), N = 3, 20
//! ```
//!
//! Every overlay container is attached by the real `overlay` CNI plugin (ADD through the
//! protocol, delegating to bridge + host-local), as `tether run --net` or any runtime would.
#[path = "../tests/cluster/mod.rs"]
mod cluster;

use cluster::Cluster;
use netns_fixtures::Netns;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p90(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64) * 0.9).ceil() as usize;
    v[i.clamp(1, v.len()) - 1]
}

/// iperf3 from `client` to `server_ip` (a server in `server`), Gbit/s.
fn iperf(client: &Netns, server: &Netns, server_ip: Ipv4Addr, secs: u32) -> f64 {
    let mut srv = server
        .command("iperf3")
        .args(["-s", "-1", "-B", &server_ip.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 (Debian iperf3)");
    std::thread::sleep(Duration::from_millis(300));
    let out = client
        .command("iperf3")
        .args(["-c", &server_ip.to_string(), "-t", &secs.to_string(), "-J"])
        .output()
        .unwrap();
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J output");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("iperf3 result")
        / 1e9
}

fn sh(ns: &Netns, args: &str) {
    let a: Vec<&str> = args.split_whitespace().collect();
    ns.sh("ip", &a);
}

/// The hand-made pair: per host a VXLAN device vxh, a bridge hbr with 10.99.<i>.1/24, a
/// container with 10.99.<i>.2, and flannel's three entries for the other host, all with `ip`.
fn hand_pair(c: &Cluster) -> (Netns, Netns) {
    let mut containers = Vec::new();
    for i in 0..2usize {
        let (me, peer) = (i, 1 - i);
        let h = &c.hosts[me].ns;
        let (my_ip, peer_ip) = (c.hosts[me].ip, c.hosts[peer].ip);
        let peer_mac = format!("02:99:00:00:00:0{peer}");
        sh(
            h,
            &format!(
                "link add vxh address 02:99:00:00:00:0{me} mtu 1450 type vxlan id 60 local {my_ip} dev eth0 dstport 4789 nolearning"
            ),
        );
        sh(h, &format!("addr add 10.99.{me}.0/32 dev vxh"));
        sh(h, "link set vxh up");
        sh(
            h,
            &format!("neigh add 10.99.{peer}.0 lladdr {peer_mac} dev vxh nud permanent"),
        );
        h.sh(
            "bridge",
            &[
                "fdb",
                "add",
                &peer_mac,
                "dev",
                "vxh",
                "dst",
                &peer_ip.to_string(),
                "self",
                "permanent",
            ],
        );
        sh(
            h,
            &format!("route add 10.99.{peer}.0/24 via 10.99.{peer}.0 dev vxh onlink"),
        );
        sh(h, "link add hbr mtu 1450 type bridge");
        sh(h, &format!("addr add 10.99.{me}.1/24 dev hbr"));
        sh(h, "link set hbr up");
        let ct = Netns::new().unwrap();
        let nl = h.netlink();
        let br = nl.link_by_name("hbr").unwrap().unwrap().index;
        use std::os::fd::AsFd;
        nl.create_veth(
            "vh0",
            Some(1450),
            Some(br),
            "eth1",
            ct.as_fd(),
            None,
            Some(1450),
        )
        .unwrap();
        sh(h, "link set vh0 up");
        sh(&ct, &format!("addr add 10.99.{me}.2/24 dev eth1"));
        sh(&ct, "link set eth1 up");
        sh(&ct, &format!("route add default via 10.99.{me}.1"));
        containers.push(ct);
    }
    let b = containers.pop().unwrap();
    let a = containers.pop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cluster::ping_args(&a, Ipv4Addr::new(10, 99, 1, 2), &[]) {
        assert!(
            Instant::now() < deadline,
            "hand-made VXLAN pair does not ping"
        );
    }
    (a, b)
}

/// Medians and bests (Gbit/s) of the overlay and of the hand-made pair.
fn throughput(rounds: usize, secs: u32) -> [f64; 4] {
    let mut c = Cluster::new(2, 50, 30);
    c.init("10.240.0.0/16", &["--vni", "50"]);
    c.start_agent(0);
    c.start_agent(1);
    c.attach_with_plugin(0);
    c.attach_with_plugin(1);
    c.wait_full_mesh(&[0, 1]);
    let (ha, hb) = hand_pair(&c);
    let (mut ov, mut hand) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // ABBA order: a trend in the machine's load hits both sides alike.
        if r % 2 == 0 {
            ov.push(iperf(
                c.container(0),
                c.container(1),
                c.container_ip(1),
                secs,
            ));
            hand.push(iperf(&ha, &hb, Ipv4Addr::new(10, 99, 1, 2), secs));
        } else {
            hand.push(iperf(&ha, &hb, Ipv4Addr::new(10, 99, 1, 2), secs));
            ov.push(iperf(
                c.container(0),
                c.container(1),
                c.container_ip(1),
                secs,
            ));
        }
        eprintln!(
            "round {r}: overlay {:.2} Gbit/s, by hand {:.2} Gbit/s",
            ov[r], hand[r]
        );
    }
    for i in 0..2 {
        c.hosts[i].ns.sh("ip", &["link", "del", "vxh"]);
        c.hosts[i].ns.sh("ip", &["link", "del", "hbr"]);
        c.detach_with_plugin(i);
    }
    c.teardown_and_assert_clean();
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    [median(&mut ov), median(&mut hand), best(&ov), best(&hand)]
}

/// Seconds from the last host's agent start to every other container's first ping of its container.
fn convergence(n: usize, runs: usize) -> Vec<f64> {
    let mut c = Cluster::new(n, 70 + n as u32, 30);
    c.init("10.241.0.0/16", &["--vni", &(70 + n).to_string()]);
    for i in 0..n - 1 {
        c.start_agent(i);
    }
    for i in 0..n - 1 {
        c.wait_lease(i);
        c.attach_with_plugin(i);
    }
    for i in 0..n - 1 {
        c.wait_routes(i, n - 2);
    }
    let last = n - 1;
    let mut times = Vec::new();
    for r in 0..runs {
        let t0 = Instant::now();
        c.start_agent(last);
        while c.hosts[last].state().read_lease().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        let target = c.attach_with_plugin(last);
        let worst = std::thread::scope(|s| {
            let hs: Vec<_> = (0..last)
                .map(|i| {
                    let ns = c.container(i);
                    s.spawn(move || {
                        while !cluster::ping_args(ns, target, &["-W", "0.2"]) {
                            assert!(t0.elapsed() < Duration::from_secs(30), "no convergence");
                        }
                        t0.elapsed()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
        });
        times.push(worst.as_secs_f64());
        eprintln!("{n} hosts, run {r}: {:.0} ms", worst.as_secs_f64() * 1e3);
        c.stop_agent(last, libc::SIGTERM);
        c.detach_with_plugin(last);
        for i in 0..last {
            c.wait_routes(i, n - 2);
        }
    }
    for i in 0..last {
        c.detach_with_plugin(i);
    }
    c.teardown_and_assert_clean();
    times
}

fn main() {
    netns_fixtures::require_privileges();
    let _ = Command::new("iperf3")
        .arg("--version")
        .output()
        .expect("iperf3 installed");
    let rounds = 9;
    let [ov, hand, ov_best, hand_best] = throughput(rounds, 2);
    println!(
        "| cross-host TCP, iperf3 2 s x {rounds}, median | overlay {ov:.2} Gbit/s | by hand {hand:.2} Gbit/s | ratio {:.3} |",
        ov / hand
    );
    println!(
        "| cross-host TCP, iperf3 2 s x {rounds}, best | overlay {ov_best:.2} Gbit/s | by hand {hand_best:.2} Gbit/s | ratio {:.3} |",
        ov_best / hand_best
    );
    for (n, runs) in [(3, 10), (20, 10)] {
        let mut t = convergence(n, runs);
        let (m, p) = (median(&mut t), p90(&mut t));
        println!(
            "| convergence, {n} hosts ({runs} runs) | median {:.0} ms | p90 {:.0} ms |",
            m * 1e3,
            p * 1e3
        );
    }
}
