//! Real packets: container to gateway, container to container across the bridge, and container to
//! an outside namespace through MASQUERADE (the outside sees the host's address), on IPv4, IPv6
//! and dual-stack. No sleeps: addresses are usable the moment ADD returns.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use netns_fixtures::{EchoServer, ping, tcp_echo, udp_echo};

/// Two containers on one gateway network with masquerading, and an outside namespace.
fn traffic(subnets: &[&str]) {
    let env = Env::new();
    let conf = env.gw_conf(subnets);
    let (a, b) = (env.th.container(), env.th.container());
    let ra = env.add(&a, "a", &conf).ok();
    let rb = env.add(&b, "b", &conf).ok();
    let outside = env.host().add_outside();
    let families: Vec<bool> = [true, false]
        .into_iter()
        .filter(|v4| result_ips(&ra).iter().any(|i| i.is_ipv4() == *v4))
        .collect();
    assert!(!families.is_empty());

    for v4 in families {
        let gw: IpAddr = ra["ips"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["address"].as_str().unwrap().contains('.') == v4)
            .unwrap()["gateway"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let (ip_a, ip_b) = (result_ip(&ra, v4), result_ip(&rb, v4));

        // Container to gateway (the bridge address) and the host answering on it.
        assert!(ping(&a, gw), "a -> gateway {gw}");
        let srv = EchoServer::tcp(env.host(), SocketAddr::new(gw, 0));
        assert_eq!(tcp_echo(&a, srv.addr(), b"to-gw").unwrap(), b"to-gw");
        assert_eq!(
            srv.peers()[0].ip(),
            ip_a,
            "the host sees the container's own address"
        );

        // Container to container across the bridge: not masqueraded.
        assert!(ping(&a, ip_b), "a -> b {ip_b}");
        let srv = EchoServer::udp(&b, SocketAddr::new(ip_b, 0));
        assert_eq!(udp_echo(&a, srv.addr(), b"a-to-b").unwrap(), b"a-to-b");
        assert_eq!(srv.peers()[0].ip(), ip_a, "bridge traffic keeps its source");

        // Container to the outside: masqueraded to the host's outside address.
        let (far, host_ip): (IpAddr, IpAddr) = if v4 {
            (outside.outside_v4.into(), outside.host_v4.into())
        } else {
            (outside.outside_v6.into(), outside.host_v6.into())
        };
        let srv = EchoServer::tcp(&outside.ns, SocketAddr::new(far, 0));
        assert_eq!(tcp_echo(&b, srv.addr(), b"out").unwrap(), b"out");
        assert_eq!(
            srv.peers()[0].ip(),
            host_ip,
            "outside must see the host's address, not {ip_b}"
        );
        let srv = EchoServer::udp(&outside.ns, SocketAddr::new(far, 0));
        assert_eq!(udp_echo(&a, srv.addr(), b"out-udp").unwrap(), b"out-udp");
        assert_eq!(srv.peers()[0].ip(), host_ip);
    }

    // After DEL the container has no connectivity left and the other one still works.
    env.del(Some(&a), "a", &conf, Some(&ra)).ok_empty();
    let v4 = result_ips(&rb)[0].is_ipv4();
    let gw: IpAddr = rb["ips"][0]["gateway"].as_str().unwrap().parse().unwrap();
    assert!(ping(&b, gw), "b still reaches the gateway");
    assert!(!ping(&b, result_ip(&ra, v4)), "a's address is gone");
}

#[test]
fn ipv4() {
    traffic(&["10.20.0.0/24"]);
}

#[test]
fn ipv6() {
    traffic(&["fd20::/64"]);
}

#[test]
fn dual_stack() {
    traffic(&["10.21.0.0/24", "fd21::/64"]);
}

#[test]
fn without_ip_masq_the_outside_sees_the_container() {
    let env = Env::new();
    let conf = env.conf(
        "1.0.0",
        &["10.22.0.0/24"],
        serde_json::json!({ "bridge": "tbr0", "isDefaultGateway": true }),
    );
    let a = env.th.container();
    let r = env.add(&a, "a", &conf).ok();
    let outside = env.host().add_outside();
    // The outside needs a route back to the container subnet for the reply.
    let o = outside.ns.netlink();
    let eth0 = o.link_by_name("eth0").unwrap().unwrap();
    o.add_route(&tether_netlink::RouteSpec {
        gw: Some(outside.host_v4.into()),
        oif: Some(eth0.index),
        ..tether_netlink::RouteSpec::new("10.22.0.0/24".parse().unwrap())
    })
    .unwrap();
    let srv = EchoServer::tcp(&outside.ns, SocketAddr::new(outside.outside_v4.into(), 0));
    assert_eq!(tcp_echo(&a, srv.addr(), b"x").unwrap(), b"x");
    assert_eq!(srv.peers()[0].ip(), result_ip(&r, true));
}
