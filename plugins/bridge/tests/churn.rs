//! 8-way ADD/DEL churn on one network while every live container keeps reaching an outside
//! namespace through NAT, and after the last DEL nothing of the network is left.
//!
//! ```text
//! anchor   ADD ── probe, probe, probe, … (the whole first phase) ── DEL
//! t1..t7   ADD → probe → DEL, ADD → probe → DEL, …  (first phase: the anchor is alive;
//!                                                  second phase: the network may empty, so
//!                                                  last DELs race new ADDs)
//! ```
//!
//! A probe is a real TCP and a real UDP exchange with echo servers outside, which must see the
//! host's outside address (MASQUERADE), not the container's. A probe that fails means a DEL took
//! the network's masquerading (or its bridge) away from a live container.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use netns_fixtures::{EchoServer, Netns, Outside, tcp_echo, udp_echo};

const CHURNERS: usize = 7;
const CYCLES: usize = 10;
/// Whole test budget: far below a CI timeout, and the cycles normally end well before.
const BUDGET: Duration = Duration::from_secs(25);

/// One TCP and one UDP round trip from `ctr` to the outside, both seen from the host's address.
fn probe(ctr: &Netns, outside: &Outside, tcp: &EchoServer, udp: &EchoServer, what: &str) {
    let host = IpAddr::from(outside.host_v4);
    let payload = what.as_bytes();
    let got = tcp_echo(ctr, tcp.addr(), payload).unwrap_or_else(|e| panic!("{what}: tcp: {e}"));
    assert_eq!(got, payload, "{what}");
    assert_eq!(
        tcp.peers().last().map(|p| p.ip()),
        Some(host),
        "{what}: tcp source"
    );
    let got = udp_echo(ctr, udp.addr(), payload).unwrap_or_else(|e| panic!("{what}: udp: {e}"));
    assert_eq!(got, payload, "{what}");
    assert_eq!(
        udp.peers().last().map(|p| p.ip()),
        Some(host),
        "{what}: udp source"
    );
}

#[test]
fn churn_keeps_every_live_container_online_and_the_last_del_leaves_nothing() {
    let env = Env::new();
    let conf = env.gw_conf(&["10.90.0.0/24"]);
    let outside = env.host().add_outside();
    let far = SocketAddr::new(outside.outside_v4.into(), 0);
    // One pair of servers per thread, so that "the last peer" is this thread's own.
    let servers: Vec<(EchoServer, EchoServer)> = (0..=CHURNERS)
        .map(|_| {
            (
                EchoServer::tcp(&outside.ns, far),
                EchoServer::udp(&outside.ns, far),
            )
        })
        .collect();
    let before = env.snapshot();
    let start = Instant::now();
    let cycles_done = AtomicUsize::new(0);
    let anchor_gone = AtomicBool::new(false);
    let probes = AtomicUsize::new(0);

    std::thread::scope(|s| {
        let (env, conf, outside, servers) = (&env, &conf, &outside, &servers);
        let (cycles_done, anchor_gone, probes) = (&cycles_done, &anchor_gone, &probes);
        s.spawn(move || {
            let ctr = env.th.container();
            let r = env.add(&ctr, "anchor", conf).ok();
            let (tcp, udp) = &servers[0];
            // Alive until the churners are half way: every ADD and DEL of the first phase
            // happens while it is online, and it is probed all the time.
            while cycles_done.load(Ordering::SeqCst) < CHURNERS * CYCLES / 2 {
                probe(&ctr, outside, tcp, udp, "anchor");
                probes.fetch_add(1, Ordering::SeqCst);
                assert!(start.elapsed() < BUDGET, "churn too slow");
            }
            env.del(Some(&ctr), "anchor", conf, Some(&r)).ok_empty();
            anchor_gone.store(true, Ordering::SeqCst);
        });
        for (t, (tcp, udp)) in servers.iter().enumerate().skip(1) {
            s.spawn(move || {
                for i in 0..CYCLES {
                    let ctr = env.th.container();
                    let id = format!("t{t}-{i}");
                    let r = env.add(&ctr, &id, conf).ok();
                    for _ in 0..2 {
                        probe(&ctr, outside, tcp, udp, &id);
                        probes.fetch_add(1, Ordering::SeqCst);
                    }
                    env.del(Some(&ctr), &id, conf, Some(&r)).ok_empty();
                    cycles_done.fetch_add(1, Ordering::SeqCst);
                    if anchor_gone.load(Ordering::SeqCst) {
                        // Staggered, so that the network empties again and again and last
                        // DELs meet new ADDs.
                        std::thread::sleep(Duration::from_millis(3 * t as u64));
                    }
                    assert!(start.elapsed() < BUDGET, "churn too slow");
                }
            });
        }
    });
    assert!(anchor_gone.load(Ordering::SeqCst));
    let probes = probes.into_inner();
    assert!(probes > 2 * CHURNERS * CYCLES, "{probes} probes");
    eprintln!(
        "churn: {} ADD/DEL cycles, {probes} probes in {:?}",
        CHURNERS * CYCLES + 1,
        start.elapsed()
    );

    let after = env.snapshot();
    assert!(env.link("tbr0").is_none(), "bridge left");
    assert!(
        !after.iptables.iter().any(|l| is_shared_masq(l)),
        "{after:#?}"
    );
    assert_nothing_left(&before, &after);
}
