//! How the nftables backend scales with published ports, in throwaway namespaces: the median
//! time of one more attachment's publish ADD and DEL, the number of rules in our table, and the
//! connection setup rate through a published port, with 10 and with 1000 ports published.
//!
//! `cargo run --release -p tether-netfilter --example nft_scale` (as root; the real network is
//! never touched).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use netns_fixtures::Netns;
use tether_netfilter::policy::{AttachmentId, HostIp, Mapping, MarkChain, PortPolicy, Proto};
use tether_netfilter::{Firewall, Nftables};

fn ip(ns: &Netns, args: &str) {
    // Netns::sh panics with the stderr unless the command succeeds.
    ns.sh("ip", &args.split_whitespace().collect::<Vec<_>>());
}

fn policy(port: u16) -> PortPolicy {
    PortPolicy {
        snat: true,
        masq_all: false,
        mark: MarkChain::Bit(13),
        conditions_v4: vec![],
        conditions_v6: vec![],
        mappings: vec![Mapping {
            proto: Proto::Tcp,
            host_port: port,
            container_port: 80,
            host_ip: HostIp::Any,
        }],
    }
}

fn who(cid: &str) -> AttachmentId<'_> {
    AttachmentId {
        network: "scale",
        container_id: cid,
        ifname: "eth0",
    }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

fn rules(ns: &Netns) -> usize {
    let text = ns.sh("nft", &["-a", "list", "table", "inet", "tether"]);
    text.lines()
        .filter(|l| l.contains("# handle") && !l.contains("{"))
        .count()
}

fn main() {
    let (host, ctr, outside) = (
        Netns::new().unwrap(),
        Netns::new().unwrap(),
        Netns::new().unwrap(),
    );
    ip(
        &host,
        &format!(
            "link add v1 type veth peer name eth0 netns {}",
            ctr.path().display()
        ),
    );
    ip(&host, "addr add 10.88.0.1/16 dev v1");
    ip(&host, "link set v1 up");
    ip(&ctr, "addr add 10.88.0.2/16 dev eth0");
    ip(&ctr, "link set eth0 up");
    ip(&ctr, "route add default via 10.88.0.1");
    ip(
        &host,
        &format!(
            "link add up0 type veth peer name o0 netns {}",
            outside.path().display()
        ),
    );
    ip(&host, "addr add 192.168.50.1/24 dev up0");
    ip(&host, "link set up0 up");
    ip(&outside, "addr add 192.168.50.2/24 dev o0");
    ip(&outside, "link set o0 up");
    host.set_sysctl("net/ipv4/ip_forward", "1");
    let listener = ctr.run(|| TcpListener::bind("10.88.0.2:80")).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let fw = Nftables::in_netns(&host).unwrap();

    fw.publish_add(
        who("server"),
        &["10.88.0.2/16".parse().unwrap()],
        &policy(8080),
    )
    .unwrap();
    let mut ensure = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        fw.masquerade_ensure("scale", &["10.88.0.2/16".parse().unwrap()], false)
            .unwrap();
        ensure.push(t.elapsed());
    }
    println!(
        "masquerade_ensure of an existing network: median {:.0} µs",
        median(ensure)
    );
    let mut published = 1;
    println!("published  ADD µs  DEL µs  rules  connect µs  connects/s  timed out (500 ms)");
    for target in [10usize, 1000] {
        while published < target {
            let cid = format!("filler{published}");
            fw.publish_add(
                who(&cid),
                &["10.88.0.3/16".parse().unwrap()],
                &policy(10000 + published as u16),
            )
            .unwrap();
            published += 1;
        }
        let (mut add, mut del) = (Vec::new(), Vec::new());
        for i in 0..50 {
            let cid = format!("probe{i}");
            let t = Instant::now();
            fw.publish_add(
                who(&cid),
                &["10.88.0.4/16".parse().unwrap()],
                &policy(30000),
            )
            .unwrap();
            add.push(t.elapsed());
            let t = Instant::now();
            fw.publish_delete(who(&cid)).unwrap();
            del.push(t.elapsed());
        }
        // Connection setup through the published port: the median of 300 connects (SYN,
        // DNAT lookup, SYN-ACK, ACK), each closed with a reset so no TIME_WAIT piles up.
        let to: SocketAddr = "192.168.50.1:8080".parse().unwrap();
        let (times, failed) = outside.run(|| {
            let (mut times, mut failed) = (Vec::new(), 0u32);
            for _ in 0..300 {
                let t = Instant::now();
                match TcpStream::connect_timeout(&to, Duration::from_millis(500)) {
                    Ok(s) => {
                        times.push(t.elapsed());
                        let reset = nix::libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &reset)
                            .ok();
                    }
                    Err(_) => failed += 1,
                }
            }
            (times, failed)
        });
        let connect = median(times);
        println!(
            "{target:>9}  {:>6.0}  {:>6.0}  {:>5}  {connect:>10.0}  {:>10.0}  {failed}",
            median(add),
            median(del),
            rules(&host),
            1e6 / connect
        );
    }
}
