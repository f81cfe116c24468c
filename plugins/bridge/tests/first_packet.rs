//! The first packet right after ADD gets through: many fresh containers, some in parallel, while
//! two busy loops load the CPUs and a thread keeps the RTNL lock busy, each send ONE UDP datagram
//! to an echo server on the gateway address the moment ADD returns.
//!
//! ```text
//!   container ns          host ns
//!   eth0 ──veth──> vethXXXX ─port─> tbr0 (10.70.0.1)
//!        one datagram ───────────────> echo server (0.0.0.0), answered within REPLY?
//! ```
//!
//! The kernel enables a new bridge port (Disabled -> Forwarding, STP off) from its link-watch
//! work, which runs asynchronously after the container end comes up. An ADD that returns before
//! that work ran leaves a port that drops the container's first ARP request; the neighbour code
//! asks again only after a second (`retrans_time`), so the reply misses a deadline below that,
//! as `ping -c1 -W1` does. The host veth's state is read right after the datagram left too, so
//! a failure says which stage was missing. Before ADD waited for the port (`wait_for_port` in
//! add.rs) this lost 7 of 320 datagrams over 8 runs on a loaded 2-core machine (5 runs failed).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use netns_fixtures::{EchoServer, Netns};
use serde_json::Value;
use tether_netlink::PortState;

const CONTAINERS: usize = 40;
/// ADDs running at once.
const PARALLEL: usize = 4;
/// Busy-loop threads competing with the kernel's link-watch worker (a nice-0 kworker) for the
/// CPUs, at a higher priority, as a loaded host's runtimes and workloads do.
const BUSY: usize = 2;
const NICE: i32 = -10;
/// Below the neighbour code's 1 s `retrans_time`: a reply that needed a second ARP request is
/// late; one that did not takes microseconds, a few milliseconds on a loaded machine.
const REPLY: Duration = Duration::from_millis(700);

#[test]
fn the_first_datagram_after_add_is_answered_under_load() {
    let env = Env::new();
    let conf = env.gw_conf(&["10.70.0.0/24"]);
    let before = env.snapshot();
    let srv = EchoServer::udp(env.host(), "0.0.0.0:0".parse().unwrap());
    let target = SocketAddr::new("10.70.0.1".parse().unwrap(), srv.addr().port());
    let ctrs: Vec<Netns> = (0..CONTAINERS).map(|_| env.th.container()).collect();
    let churn = Netns::new().unwrap();
    let stop = AtomicBool::new(false);

    let outcomes: Vec<(Value, String)> = std::thread::scope(|s| {
        for _ in 0..BUSY {
            s.spawn(|| {
                // SAFETY: plain syscalls on this thread's own id.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as u32, NICE) };
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        // And for the RTNL lock, which the link-watch work needs: as other runtimes and
        // plugins take it on a busy host, in a namespace of its own.
        s.spawn(|| {
            let h = churn.netlink();
            while !stop.load(Ordering::Relaxed) {
                let br = h.create_bridge("churn0", None, false).unwrap();
                h.del_link(br.index).unwrap();
            }
        });
        let mut outcomes = Vec::new();
        for (batch, chunk) in ctrs.chunks(PARALLEL).enumerate() {
            let handles: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(j, ctr)| {
                    let (env, conf) = (&env, &conf);
                    let i = batch * PARALLEL + j;
                    s.spawn(move || {
                        let r = env.add(ctr, &format!("ctr{i}"), conf).ok();
                        let sock = ctr.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap();
                        sock.set_read_timeout(Some(REPLY)).unwrap();
                        sock.send_to(b"first", target).unwrap();
                        let port = env
                            .link(&host_veth(&r))
                            .map(|l| (l.oper_up, l.bridge_port.map(|p| p.state)));
                        let answered = sock.recv_from(&mut [0u8; 16]).is_ok();
                        let failed = match port {
                            Some((true, Some(PortState::Forwarding))) if answered => String::new(),
                            port => format!(
                                "ctr{i}: answered {answered}, host veth (oper_up, port state) right after the datagram {port:?}"
                            ),
                        };
                        (r, failed)
                    })
                })
                .collect();
            outcomes.extend(handles.into_iter().map(|h| h.join().unwrap()));
        }
        stop.store(true, Ordering::Relaxed);
        outcomes
    });

    let failed: Vec<&str> = outcomes
        .iter()
        .map(|(_, f)| f.as_str())
        .filter(|f| !f.is_empty())
        .collect();
    drop(srv);
    for (i, (ctr, (r, _))) in ctrs.iter().zip(&outcomes).enumerate() {
        env.del(Some(ctr), &format!("ctr{i}"), &conf, Some(r))
            .ok_empty();
    }
    assert!(
        failed.is_empty(),
        "{} of {CONTAINERS} first packets lost or ports not ready:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert_nothing_left(&before, &env.snapshot());
}
