//! Two hosts joined by a hand-made VXLAN (what the agent programs: device, route, neighbour,
//! FDB entry), a container on each through the plugin: they exchange ICMP, TCP and UDP with
//! their own addresses (no masquerading inside the overlay), the MTU is the lease's, and
//! traffic leaving the overlay is masqueraded.

mod common;

use common::*;
use netns_fixtures::{EchoServer, ping, tcp_echo, udp_echo};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};

#[test]
fn containers_on_two_hosts_talk_unmasqueraded_and_only_traffic_leaving_the_overlay_is_masqueraded()
{
    let p = Pair::new();
    let outside = p.a.ns().add_outside();
    let conf = p.a.conf(json!({}));
    let before = (p.a.snapshot(), p.b.snapshot());
    let (ca, cb) = (p.a.th.container(), p.b.th.container());
    let ra = p.a.add(&ca, "ca", &conf).ok();
    let rb = p.b.add(&cb, "cb", &conf).ok();
    let (ia, ib) = (result_ip(&ra), result_ip(&rb));
    assert_eq!(ia.to_string(), "10.200.3.2");
    assert_eq!(ib.to_string(), "10.200.4.2");

    // ICMP both ways, and 1400 bytes with DF fit the lease's MTU of 1450 while 1423 do not.
    assert!(ping(&ca, ib), "a -> b");
    assert!(ping(&cb, ia), "b -> a");
    assert!(ping_df(&ca, ib, 1400), "1400 bytes with DF must pass");
    assert!(
        !ping_df(&ca, ib, 1423),
        "1451-byte packets exceed the overlay MTU"
    );

    // TCP and UDP, seen from the far container with the sender's own address.
    let tcp = EchoServer::tcp(&cb, SocketAddr::new(ib, 0));
    assert_eq!(tcp_echo(&ca, tcp.addr(), b"over tcp").unwrap(), b"over tcp");
    assert_eq!(
        tcp.peers()[0].ip(),
        ia,
        "overlay traffic must not be masqueraded"
    );
    let udp = EchoServer::udp(&cb, SocketAddr::new(ib, 0));
    assert_eq!(udp_echo(&ca, udp.addr(), b"over udp").unwrap(), b"over udp");
    assert_eq!(udp.peers()[0].ip(), ia);

    // Leaving the overlay: masqueraded to the host's address.
    let far = EchoServer::tcp(&outside.ns, SocketAddr::new(outside.outside_v4.into(), 0));
    assert_eq!(tcp_echo(&ca, far.addr(), b"out").unwrap(), b"out");
    assert_eq!(far.peers()[0].ip(), IpAddr::from(outside.host_v4));
    drop((tcp, udp, far));

    p.a.del("ca", &conf, Some(&ra)).ok_empty();
    p.b.del("cb", &conf, Some(&rb)).ok_empty();
    assert_nothing_left(&before.0, &p.a.snapshot());
    assert_nothing_left(&before.1, &p.b.snapshot());
}
