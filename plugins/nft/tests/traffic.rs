//! Real packets through the layout: a container's connection leaves the host masqueraded, and a
//! published host port reaches a server in the container through the DNAT map.
//!
//! ```text
//!  container ns                 host ns (our table)                 outside ns
//!  eth0 10.88.0.2/16 ──veth── vc0 10.88.0.1/16   outside0 198.51.100.1 ── eth0 198.51.100.2
//!  default via 10.88.0.1        ip_forward=1                        (no route to 10.88/16)
//! ```

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;

use common::*;
use netns_fixtures::{EchoServer, Netns, Outside, TestHost, tcp_echo};
use tether_netlink::{IpNetwork, RouteSpec};
use tether_nft::Batch;

const CONTAINER: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);

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
    hn.set_up(hi).unwrap();
    cn.add_addr(ci, IpNetwork::new(CONTAINER.into(), 16).unwrap(), false)
        .unwrap();
    cn.set_up(ci).unwrap();
    let default = RouteSpec {
        gw: Some(GATEWAY.into()),
        oif: Some(ci),
        ..RouteSpec::new("0.0.0.0/0".parse().unwrap())
    };
    cn.add_route(&default).unwrap();
    h.set_sysctl("net.ipv4.ip_forward", "1");
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
    assert_eq!(peers[0].ip(), std::net::IpAddr::from(o.host_v4));
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
    assert_eq!(peers, [o.outside_v4, o.host_v4].map(std::net::IpAddr::from));

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
