//! Real packets through the layout: a container's connection leaves the host masqueraded, and a
//! published host port reaches a server in the container through the DNAT map.
//!
//! ```text
//!  container ns                 host ns (our table)                 outside ns
//!  eth0 10.88.0.2/16 ──veth── vc0 10.88.0.1/16   outside0 198.51.100.1 ── eth0 198.51.100.2
//!       fd00:88::2/64              fd00:88::1/64          2001:db8:ff::1        2001:db8:ff::2
//!  default via .1 / ::1         forwarding on                  (no route back to the container)
//! ```

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;

use common::*;
use netns_fixtures::{EchoServer, Netns, Outside, TestHost, tcp_echo};
use tether_netlink::{IpNetwork, RouteSpec};
use tether_nft::{Batch, Elem, Value, Verdict};

const CONTAINER: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const CONTAINER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 2);
const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 1);

/// The host with a container on a veth and an outside world, forwarding between them.
fn topology(h: &TestHost) -> (Netns, Outside) {
    let c = h.container();
    let o = h.add_outside();
    let hn = h.netlink();
    let cn = c.netlink();
    let hi = hn
        .create_veth("vc0", None, None, "eth0", c.as_fd(), None, None)
        .expect("veth");
    let ci = cn
        .link_by_name("eth0")
        .unwrap()
        .expect("container end")
        .index;
    hn.add_addr(hi, IpNetwork::new(GATEWAY.into(), 16).unwrap(), false)
        .unwrap();
    hn.add_addr(hi, IpNetwork::new(GATEWAY6.into(), 64).unwrap(), true)
        .unwrap();
    hn.set_up(hi).unwrap();
    cn.add_addr(ci, IpNetwork::new(CONTAINER.into(), 16).unwrap(), false)
        .unwrap();
    cn.add_addr(ci, IpNetwork::new(CONTAINER6.into(), 64).unwrap(), true)
        .unwrap();
    cn.set_up(ci).unwrap();
    let default = RouteSpec {
        gw: Some(GATEWAY.into()),
        oif: Some(ci),
        ..RouteSpec::new("0.0.0.0/0".parse().unwrap())
    };
    cn.add_route(&default).unwrap();
    let default6 = RouteSpec {
        gw: Some(GATEWAY6.into()),
        oif: Some(ci),
        ..RouteSpec::new("::/0".parse().unwrap())
    };
    cn.add_route(&default6).unwrap();
    h.set_sysctl("net.ipv4.ip_forward", "1");
    h.set_sysctl("net.ipv6.conf.all.forwarding", "1");
    (c, o)
}

fn delete_table(h: &TestHost) {
    let mut b = Batch::new();
    b.delete_table(&table());
    apply(h, &b).unwrap();
}

#[test]
fn a_container_reaches_the_outside_masqueraded_as_the_host() {
    let h = TestHost::new();
    let (c, o) = topology(&h);
    let server = EchoServer::tcp(&o.ns, SocketAddr::new(o.outside_v4.into(), 0));
    // Without our table the outside cannot answer 10.88.0.2: it has no route back.
    assert!(tcp_echo(&c, server.addr(), b"no nat").is_err());
    let before = (ruleset(&h), h.snapshot(&[]));

    apply(&h, &layout()).unwrap();
    assert_eq!(tcp_echo(&c, server.addr(), b"masq").unwrap(), b"masq");
    let peers = server.peers();
    assert_eq!(
        peers.len(),
        1,
        "only the masqueraded connection arrived: {peers:?}"
    );
    assert_eq!(peers[0].ip(), IpAddr::from(o.host_v4));
    assert!(
        list_table(&h).contains("counter packets 1 "),
        "the rule counted the connection's first packet:\n{}",
        list_table(&h)
    );

    delete_table(&h);
    assert_eq!((ruleset(&h), h.snapshot(&[])), before);
}

#[test]
fn a_published_port_reaches_the_container_through_the_map_until_its_element_goes() {
    let h = TestHost::new();
    let (c, o) = topology(&h);
    let server = EchoServer::tcp(&c, SocketAddr::new(CONTAINER.into(), 80));
    let before = (ruleset(&h), h.snapshot(&[]));
    let published = SocketAddr::new(o.host_v4.into(), 8080);

    apply(&h, &layout()).unwrap();
    assert!(
        tcp_echo(&o.ns, published, b"x").is_err(),
        "not published yet"
    );
    let t = table();
    let mut add = Batch::new();
    add.add_elements(&t, &ports(), &[port(6, 8080, CONTAINER, 80)])
        .unwrap();
    apply(&h, &add).unwrap();

    // From outside (prerouting), and from the host itself (output).
    assert_eq!(
        tcp_echo(&o.ns, published, b"from outside").unwrap(),
        b"from outside"
    );
    assert_eq!(
        tcp_echo(&h, published, b"from the host").unwrap(),
        b"from the host"
    );
    let peers: Vec<_> = server.peers().iter().map(|p| p.ip()).collect();
    assert_eq!(peers, [o.outside_v4, o.host_v4].map(IpAddr::from));

    let mut del = Batch::new();
    del.delete_elements(&t, &ports(), &[port(6, 8080, CONTAINER, 80)])
        .unwrap();
    apply(&h, &del).unwrap();
    assert!(
        tcp_echo(&o.ns, published, b"x").is_err(),
        "unpublished again"
    );
    assert_eq!(server.peers().len(), 2);

    delete_table(&h);
    assert_eq!((ruleset(&h), h.snapshot(&[])), before);
}

#[test]
fn ipv6_is_masqueraded_and_published_like_ipv4() {
    let h = TestHost::new();
    let (c, o) = topology(&h);
    let outside = EchoServer::tcp(&o.ns, SocketAddr::new(o.outside_v6.into(), 0));
    let inside = EchoServer::tcp(&c, SocketAddr::new(CONTAINER6.into(), 80));
    let before = (ruleset(&h), h.snapshot(&[]));

    apply(&h, &layout()).unwrap();
    let t = table();
    let mut add = Batch::new();
    let key = [Value::Proto(6), Value::Port(8080)];
    let to = [Value::Ipv6(CONTAINER6), Value::Port(80)];
    add.add_elements(&t, &ports6(), &[Elem::key(&key).to(&to)])
        .unwrap();
    apply(&h, &add).unwrap();

    assert_eq!(tcp_echo(&c, outside.addr(), b"out").unwrap(), b"out");
    assert_eq!(outside.peers()[0].ip(), IpAddr::from(o.host_v6));
    let published = SocketAddr::new(o.host_v6.into(), 8080);
    assert_eq!(tcp_echo(&o.ns, published, b"in").unwrap(), b"in");
    assert_eq!(inside.peers()[0].ip(), IpAddr::from(o.outside_v6));

    delete_table(&h);
    assert_eq!((ruleset(&h), h.snapshot(&[])), before);
}

#[test]
fn an_interface_in_the_verdict_map_gets_its_verdict_and_leaving_the_map_restores_traffic() {
    let h = TestHost::new();
    let (c, o) = topology(&h);
    let server = EchoServer::tcp(&o.ns, SocketAddr::new(o.outside_v4.into(), 0));
    let before = (ruleset(&h), h.snapshot(&[]));
    apply(&h, &layout()).unwrap();

    // Forwarded traffic leaving through outside0 is dropped while outside0 maps to drop.
    let t = table();
    let isolated = || Elem::key(&[Value::ifname("outside0").unwrap()]).verdict(Verdict::Drop);
    let mut add = Batch::new();
    add.add_elements(&t, &isolation(), &[isolated()]).unwrap();
    apply(&h, &add).unwrap();
    assert!(tcp_echo(&c, server.addr(), b"x").is_err());
    assert!(server.peers().is_empty());

    let mut del = Batch::new();
    del.delete_elements(&t, &isolation(), &[isolated()])
        .unwrap();
    apply(&h, &del).unwrap();
    assert_eq!(tcp_echo(&c, server.addr(), b"y").unwrap(), b"y");

    delete_table(&h);
    assert_eq!((ruleset(&h), h.snapshot(&[])), before);
}
