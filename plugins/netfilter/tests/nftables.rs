//! The nftables backend against the real kernel, each test in its own throwaway namespaces:
//! the exact `nft list table` text after ADDs, packets through masquerade and published ports
//! (outside, localhost, hairpin from itself and a neighbour, UDP), firewall isolation,
//! conflicts, CHECK after each kind of breakage, repair by the next ADD, GC, DEL idempotence,
//! and teardown back to the bare table.

mod common;

use std::net::SocketAddr;

use common::*;
use netns_fixtures::Netns;
use netns_fixtures::{EchoServer, tcp_echo, udp_echo};
use tether_netfilter::policy::{
    AttachmentId, FilterPolicy, HostIp, IngressPolicy, Mapping, MarkChain, PortPolicy, Proto,
};
use tether_netfilter::{Error, Firewall, Nftables};

fn fw(ns: &Netns) -> Nftables {
    Nftables::in_netns(ns).unwrap()
}

fn list(ns: &Netns) -> String {
    ns.sh("nft", &["list", "table", "inet", "tether"])
}

fn nft(ns: &Netns, args: &str) {
    // Netns::sh panics with the stderr unless the command succeeds.
    ns.sh("nft", &args.split_whitespace().collect::<Vec<_>>());
}

fn who<'a>(cid: &'a str) -> AttachmentId<'a> {
    AttachmentId {
        network: "net-a",
        container_id: cid,
        ifname: "eth0",
    }
}

fn map(proto: Proto, host_port: u16, container_port: u16, host_ip: HostIp) -> Mapping {
    Mapping {
        proto,
        host_port,
        container_port,
        host_ip,
    }
}

fn policy(mappings: Vec<Mapping>) -> PortPolicy {
    PortPolicy {
        snat: true,
        masq_all: false,
        mark: MarkChain::Bit(13),
        conditions_v4: vec![],
        conditions_v6: vec![],
        mappings,
    }
}

fn two_mappings() -> PortPolicy {
    policy(vec![
        map(Proto::Tcp, 8080, 80, HostIp::Any),
        map(
            Proto::Udp,
            53,
            5353,
            HostIp::Addr("192.0.2.1".parse().unwrap()),
        ),
    ])
}

/// The shared publishing objects as `nft` prints them, without elements: what is left once
/// every attachment is gone (the shared chains stay, as the iptables backend's do).
const SHARED_TAIL: &str = "\tchain dnat-prerouting {
\t\tcomment \"tether: port publishing\"
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tfib daddr type local jump publish comment \"tether: published ports, from outside\"
\t}

\tchain dnat-output {
\t\tcomment \"tether: port publishing\"
\t\ttype nat hook output priority -100; policy accept;
\t\tfib daddr type local jump publish comment \"tether: published ports, from this host\"
\t}

\tchain publish {
\t\tdnat ip to ip daddr . meta l4proto . th dport map @hostports4 comment \"tether: ports on one host address, IPv4\"
\t\tmeta nfproto ipv4 dnat ip to meta l4proto . th dport map @ports4 comment \"tether: ports on every host address, IPv4\"
\t\tdnat ip6 to ip6 daddr . meta l4proto . th dport map @hostports6 comment \"tether: ports on one host address, IPv6\"
\t\tmeta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @ports6 comment \"tether: ports on every host address, IPv6\"
\t}

\tchain snat {
\t\tcomment \"tether: port publishing\"
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tct status dnat ip daddr . ip saddr @snat4 masquerade comment \"tether: hairpin and localhost, IPv4\"
\t\tct status dnat ip6 daddr . ip6 saddr @snat6 masquerade comment \"tether: hairpin and localhost, IPv6\"
\t}

\tchain localnet-guard {
\t\tcomment \"tether: port publishing\"
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tiifname != \"lo\" ip daddr 127.0.0.0/8 drop comment \"tether route_localnet guard: 127.0.0.0/8 only from lo\"
\t}
}
";

const C1: &str = "tether net=net-a id=c1 if=eth0";

fn expected_after_adds() -> String {
    let h = "ec43057c07aaa51f8826";
    format!(
        "table inet tether {{
\tcomment \"Tether's firewall (nftables backend): ours alone\"
\tset masq4-net-a {{
\t\ttype ipv4_addr
\t\tflags interval
\t\tcomment \"tether net=net-a\"
\t\telements = {{ 10.88.0.0/16 }}
\t}}

\tset masq6-net-a {{
\t\ttype ipv6_addr
\t\tflags interval
\t\tcomment \"tether net=net-a\"
\t\telements = {{ fd88::/64 }}
\t}}

\tmap ports4 {{
\t\ttype inet_proto . inet_service : ipv4_addr . inet_service
\t\tcomment \"published ports on every host address: proto . port : container . port\"
\t\telements = {{ tcp . 8080 comment \"{C1}\" : 10.88.0.2 . 80 }}
\t}}

\tmap hostports4 {{
\t\ttype ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
\t\tcomment \"published ports on one host address: hostIP . proto . port : container . port\"
\t\telements = {{ 192.0.2.1 . udp . 53 comment \"{C1}\" : 10.88.0.2 . 5353 }}
\t}}

\tset snat4 {{
\t\ttype ipv4_addr . ipv4_addr
\t\tflags interval
\t\tcomment \"DNAT-ed traffic to masquerade: container . sources (hairpin, localhost, masqAll)\"
\t\telements = {{ 10.88.0.2 . 10.88.0.0/16 comment \"{C1}\",
\t\t\t     10.88.0.2 . 127.0.0.0/8 comment \"{C1}\" }}
\t}}

\tmap ports6 {{
\t\ttype inet_proto . inet_service : ipv6_addr . inet_service
\t\tcomment \"published ports on every host address: proto . port : container . port\"
\t\telements = {{ tcp . 8080 comment \"{C1}\" : fd88::2 . 80 }}
\t}}

\tmap hostports6 {{
\t\ttype ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service
\t\tcomment \"published ports on one host address: hostIP . proto . port : container . port\"
\t}}

\tset snat6 {{
\t\ttype ipv6_addr . ipv6_addr
\t\tflags interval
\t\tcomment \"DNAT-ed traffic to masquerade: container . sources (hairpin, localhost, masqAll)\"
\t\telements = {{ fd88::2 . fd88::/64 comment \"{C1}\" }}
\t}}

\tmap pub4-{h} {{
\t\ttype ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
\t\tcomment \"{C1}\"
\t\telements = {{ 127.0.0.0 . ip . 8 comment \"{C1}\" : 10.88.0.2 . 0,
\t\t\t     10.88.0.0 . ip . 16 comment \"{C1}\" : 10.88.0.2 . 0,
\t\t\t     192.0.2.1 . udp . 53 comment \"{C1}\" : 10.88.0.2 . 5353,
\t\t\t     0.0.0.0 . tcp . 8080 comment \"{C1}\" : 10.88.0.2 . 80 }}
\t}}

\tmap pub6-{h} {{
\t\ttype ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service
\t\tcomment \"{C1}\"
\t\telements = {{ fd88:: . ip . 64 comment \"{C1}\" : fd88::2 . 0,
\t\t\t     :: . tcp . 8080 comment \"{C1}\" : fd88::2 . 80 }}
\t}}

\tchain masq-net-a {{
\t\tcomment \"tether net=net-a: masquerade its subnets\"
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr @masq4-net-a ip daddr != @masq4-net-a ip daddr != 224.0.0.0/4 masquerade comment \"masquerade network net-a, IPv4\"
\t\tip6 saddr @masq6-net-a ip6 daddr != @masq6-net-a ip6 daddr != ff00::/8 masquerade comment \"masquerade network net-a, IPv6\"
\t}}

{SHARED_TAIL}"
    )
}

/// After every attachment and network is gone: the shared maps and sets, empty.
fn expected_bare() -> String {
    let mut s = String::from(
        "table inet tether {\n\tcomment \"Tether's firewall (nftables backend): ours alone\"\n",
    );
    for (kind, name, ty, flags, comment) in [
        (
            "map",
            "ports4",
            "inet_proto . inet_service : ipv4_addr . inet_service",
            false,
            "published ports on every host address: proto . port : container . port",
        ),
        (
            "map",
            "hostports4",
            "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
            false,
            "published ports on one host address: hostIP . proto . port : container . port",
        ),
        (
            "set",
            "snat4",
            "ipv4_addr . ipv4_addr",
            true,
            "DNAT-ed traffic to masquerade: container . sources (hairpin, localhost, masqAll)",
        ),
        (
            "map",
            "ports6",
            "inet_proto . inet_service : ipv6_addr . inet_service",
            false,
            "published ports on every host address: proto . port : container . port",
        ),
        (
            "map",
            "hostports6",
            "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service",
            false,
            "published ports on one host address: hostIP . proto . port : container . port",
        ),
        (
            "set",
            "snat6",
            "ipv6_addr . ipv6_addr",
            true,
            "DNAT-ed traffic to masquerade: container . sources (hairpin, localhost, masqAll)",
        ),
    ] {
        s.push_str(&format!("\t{kind} {name} {{\n\t\ttype {ty}\n"));
        if flags {
            s.push_str("\t\tflags interval\n");
        }
        s.push_str(&format!("\t\tcomment \"{comment}\"\n\t}}\n\n"));
    }
    s + SHARED_TAIL
}

fn addrs() -> [tether_netfilter::IpNetwork; 2] {
    [net("10.88.0.2/16"), net("fd88::2/64")]
}

#[test]
fn the_table_reads_back_exactly_and_teardown_leaves_only_the_empty_shared_objects() {
    let ns = ns();
    let fw = fw(&ns);
    fw.masquerade_ensure("net-a", &addrs(), true).unwrap();
    // Twice: ensure and ADD are repeatable, nothing doubles.
    fw.masquerade_ensure("net-a", &addrs(), false).unwrap();
    fw.publish_add(who("c1"), &addrs(), &two_mappings())
        .unwrap();
    fw.publish_add(who("c1"), &addrs(), &two_mappings())
        .unwrap();
    assert_eq!(list(&ns), expected_after_adds());
    fw.publish_check(who("c1"), &addrs(), &two_mappings())
        .unwrap();
    fw.masquerade_check("net-a", &addrs()).unwrap();
    assert_eq!(
        fw.masquerade_networks().unwrap(),
        ["net-a".to_string()].into()
    );
    // `nft -j` reads it too (people debug with it).
    let json: serde_json::Value =
        serde_json::from_str(&ns.sh("nft", &["-j", "list", "table", "inet", "tether"])).unwrap();
    assert!(json["nftables"].as_array().unwrap().len() > 20);

    let gone = fw.publish_delete(who("c1")).unwrap();
    let mut ports: Vec<(Proto, u16)> = gone.iter().map(|p| (p.proto, p.host_port)).collect();
    ports.sort();
    assert_eq!(
        ports,
        [(Proto::Tcp, 8080), (Proto::Tcp, 8080), (Proto::Udp, 53)]
    );
    assert!(
        gone.iter()
            .all(|p| p.network == "net-a" && p.container_id == "c1")
    );
    // DEL is idempotent.
    assert!(fw.publish_delete(who("c1")).unwrap().is_empty());
    assert_eq!(fw.masquerade_remove("net-a").unwrap(), 1);
    assert_eq!(fw.masquerade_remove("net-a").unwrap(), 0);
    assert!(fw.masquerade_check("net-a", &addrs()).is_err());
    assert_eq!(list(&ns), expected_bare());
}

#[test]
fn a_host_port_another_attachment_holds_is_a_conflict_and_changes_nothing() {
    let ns = ns();
    let fw = fw(&ns);
    let any = policy(vec![map(Proto::Tcp, 8080, 80, HostIp::Any)]);
    let on = |a: &str| {
        policy(vec![map(
            Proto::Tcp,
            8080,
            80,
            HostIp::Addr(a.parse().unwrap()),
        )])
    };
    fw.publish_add(who("c1"), &[net("10.88.0.2/16")], &any)
        .unwrap();
    let before = list(&ns);
    let c2 = [net("10.88.0.3/16")];
    for (what, p) in [
        ("every address", any.clone()),
        ("one address", on("192.0.2.1")),
    ] {
        match fw.publish_add(who("c2"), &c2, &p) {
            Err(Error::Conflict(msg)) => assert!(msg.contains("id=c1"), "{what}: {msg}"),
            other => panic!("{what}: expected a conflict, got {other:?}"),
        }
        assert_eq!(list(&ns), before, "{what}: a refused ADD changed the table");
    }
    // UDP on the same port is another port.
    fw.publish_add(
        who("c2"),
        &c2,
        &policy(vec![map(Proto::Udp, 8080, 80, HostIp::Any)]),
    )
    .unwrap();
    fw.publish_delete(who("c2")).unwrap();
    // One host address first, then every address on the same port: still a conflict.
    fw.publish_delete(who("c1")).unwrap();
    fw.publish_add(who("c1"), &[net("10.88.0.2/16")], &on("192.0.2.1"))
        .unwrap();
    fw.publish_add(who("c3"), &[net("10.88.0.4/16")], &on("192.0.2.2"))
        .unwrap();
    assert!(matches!(
        fw.publish_add(who("c2"), &c2, &any),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        fw.publish_add(who("c2"), &c2, &on("192.0.2.1")),
        Err(Error::Conflict(_))
    ));
    // The holder itself may publish it again (ADD replaces).
    fw.publish_add(who("c1"), &[net("10.88.0.2/16")], &on("192.0.2.1"))
        .unwrap();
    fw.publish_delete(who("c1")).unwrap();
    fw.publish_delete(who("c3")).unwrap();
    assert_eq!(list(&ns), expected_bare());
}

#[test]
fn check_finds_each_breakage_and_the_next_add_repairs_it() {
    let ns = ns();
    let fw = fw(&ns);
    let p = two_mappings();
    fw.masquerade_ensure("net-a", &addrs(), true).unwrap();
    fw.publish_add(who("c1"), &addrs(), &p).unwrap();
    let good = list(&ns);
    let breakages = [
        "delete element inet tether ports4 { tcp . 8080 }",
        "flush chain inet tether publish",
        "add rule inet tether publish counter",
        "add element inet tether ports4 { tcp . 8080 : 10.88.0.9 . 80 }",
    ];
    for b in breakages {
        // The last one needs the element gone first.
        if b.starts_with("add element") {
            nft(&ns, "delete element inet tether ports4 { tcp . 8080 }");
        }
        nft(&ns, b);
        match fw.publish_check(who("c1"), &addrs(), &p) {
            Err(Error::Check(_)) => {}
            other => panic!("CHECK after `{b}`: {other:?}"),
        }
        if b.starts_with("add element") {
            nft(&ns, "delete element inet tether ports4 { tcp . 8080 }");
        }
        fw.publish_add(who("c1"), &addrs(), &p).unwrap();
        assert_eq!(list(&ns), good, "ADD after `{b}` did not repair");
        fw.publish_check(who("c1"), &addrs(), &p).unwrap();
    }
    // The attachment's record deleted by hand: CHECK fails, ADD writes it again.
    let rec = good
        .lines()
        .find_map(|l| l.trim().strip_prefix("map pub4-"))
        .map(|l| format!("pub4-{}", l.trim_end_matches(" {")))
        .unwrap();
    nft(&ns, &format!("delete map inet tether {rec}"));
    assert!(matches!(
        fw.publish_check(who("c1"), &addrs(), &p),
        Err(Error::Check(_))
    ));
    // A masquerade rule gone, a subnet gone.
    nft(&ns, "flush chain inet tether masq-net-a");
    assert!(matches!(
        fw.masquerade_check("net-a", &addrs()),
        Err(Error::Check(_))
    ));
    fw.masquerade_ensure("net-a", &addrs(), false).unwrap();
    fw.masquerade_check("net-a", &addrs()).unwrap();
    nft(
        &ns,
        "delete element inet tether masq4-net-a { 10.88.0.0/16 }",
    );
    assert!(matches!(
        fw.masquerade_check("net-a", &addrs()),
        Err(Error::Check(_))
    ));
}

#[test]
fn gc_removes_only_attachments_of_the_network_that_are_not_valid() {
    let ns = ns();
    let fw = fw(&ns);
    let p = |port| policy(vec![map(Proto::Tcp, port, 80, HostIp::Any)]);
    fw.publish_add(who("c1"), &[net("10.88.0.2/16")], &p(8001))
        .unwrap();
    fw.publish_add(who("c2"), &[net("10.88.0.3/16")], &p(8002))
        .unwrap();
    let other = AttachmentId {
        network: "net-b",
        container_id: "c9",
        ifname: "eth0",
    };
    fw.publish_add(other, &[net("10.99.0.2/16")], &p(8009))
        .unwrap();
    let gone = fw.publish_gc("net-a", &[who("c1")]).unwrap();
    assert_eq!(gone.iter().map(|g| g.host_port).collect::<Vec<_>>(), [8002]);
    fw.publish_check(who("c1"), &[net("10.88.0.2/16")], &p(8001))
        .unwrap();
    fw.publish_check(other, &[net("10.99.0.2/16")], &p(8009))
        .unwrap();
    assert!(
        fw.publish_check(who("c2"), &[net("10.88.0.3/16")], &p(8002))
            .is_err()
    );
    // The freed port can be published again.
    fw.publish_add(who("c4"), &[net("10.88.0.5/16")], &p(8002))
        .unwrap();
    for w in [who("c1"), who("c4"), other] {
        fw.publish_delete(w).unwrap();
    }
    assert_eq!(list(&ns), expected_bare());
}

#[test]
fn iptables_only_options_are_refused_before_anything_is_written() {
    let ns = ns();
    let fw = fw(&ns);
    let mut p = two_mappings();
    p.conditions_v4 = vec!["!".into(), "-s".into(), "192.0.2.0/24".into()];
    assert!(matches!(
        fw.publish_add(who("c1"), &addrs(), &p),
        Err(Error::Invalid { .. })
    ));
    let mut p = two_mappings();
    p.mark = MarkChain::External("KUBE-MARK-MASQ".into());
    assert!(matches!(
        fw.publish_add(who("c1"), &addrs(), &p),
        Err(Error::Invalid { .. })
    ));
    let o = ns
        .command("nft")
        .args(["list", "table", "inet", "tether"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "a refused ADD created the table");
}

/// host: bridge br0 10.88.0.1/16 with containers c1 (10.88.0.2) and c2 (10.88.0.3), and
/// uplink 192.168.50.1/24 to `outside` (192.168.50.2, no route to 10.88.0.0/16).
struct World {
    host: Netns,
    c1: Netns,
    c2: Netns,
    outside: Netns,
}

fn world() -> World {
    let w = World {
        host: ns(),
        c1: ns(),
        c2: ns(),
        outside: ns(),
    };
    let h = &w.host;
    ip(h, "link add br0 type bridge");
    ip(h, "addr add 10.88.0.1/16 dev br0");
    ip(h, "link set br0 up");
    for (i, c) in [(1, &w.c1), (2, &w.c2)] {
        ip(
            h,
            &format!(
                "link add v{i} type veth peer name eth0 netns {}",
                c.path().display()
            ),
        );
        ip(h, &format!("link set v{i} master br0"));
        ip(h, &format!("link set v{i} up"));
        ip(c, &format!("addr add 10.88.0.{}/16 dev eth0", i + 1));
        ip(c, "link set eth0 up");
        ip(c, "link set lo up");
        ip(c, "route add default via 10.88.0.1");
    }
    ip(
        h,
        &format!(
            "link add up0 type veth peer name o0 netns {}",
            w.outside.path().display()
        ),
    );
    ip(h, "addr add 192.168.50.1/24 dev up0");
    ip(h, "link set up0 up");
    ip(h, "link set lo up");
    ip(&w.outside, "addr add 192.168.50.2/24 dev o0");
    ip(&w.outside, "link set o0 up");
    h.set_sysctl("net/ipv4/ip_forward", "1");
    // Hairpin over the bridge port, and 127.0.0.1 DNAT (what portmap turns on).
    for v in ["v1", "v2"] {
        ip(h, &format!("link set {v} type bridge_slave hairpin on"));
    }
    h.set_sysctl("net/ipv4/conf/br0/route_localnet", "1");
    w
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn packets_go_through_masquerade_published_ports_hairpin_and_localhost() {
    let w = world();
    let fw = fw(&w.host);
    let c1 = [net("10.88.0.2/16")];
    fw.masquerade_ensure("net-a", &c1, true).unwrap();
    let p = policy(vec![
        map(Proto::Tcp, 8080, 80, HostIp::Any),
        map(Proto::Udp, 5353, 53, HostIp::Any),
        map(
            Proto::Tcp,
            9090,
            80,
            HostIp::Addr("192.168.50.1".parse().unwrap()),
        ),
        map(
            Proto::Tcp,
            9191,
            80,
            HostIp::Addr("127.0.0.1".parse().unwrap()),
        ),
        map(
            Proto::Tcp,
            9292,
            80,
            HostIp::Addr("10.88.0.1".parse().unwrap()),
        ),
    ]);
    fw.publish_add(who("c1"), &c1, &p).unwrap();
    let tcp = EchoServer::tcp(&w.c1, sa("10.88.0.2:80"));
    let _udp = EchoServer::udp(&w.c1, sa("10.88.0.2:53"));
    let out = EchoServer::tcp(&w.outside, sa("192.168.50.2:7000"));

    // Masquerade: the outside has no route back to 10.88.0.0/16.
    assert_eq!(tcp_echo(&w.c1, out.addr(), b"m").unwrap(), b"m");
    assert_eq!(out.peers().last().unwrap().ip().to_string(), "192.168.50.1");

    let seen = |what: &str, from: &Netns, to: &str, peer: &str| {
        assert_eq!(
            tcp_echo(from, sa(to), b"x").unwrap_or_else(|e| panic!("{what}: {e}")),
            b"x"
        );
        assert_eq!(tcp.peers().last().unwrap().ip().to_string(), peer, "{what}");
    };
    seen(
        "from outside, every address",
        &w.outside,
        "192.168.50.1:8080",
        "192.168.50.2",
    );
    seen(
        "from outside, its host address",
        &w.outside,
        "192.168.50.1:9090",
        "192.168.50.2",
    );
    seen(
        "from the host, gateway address",
        &w.host,
        "10.88.0.1:9292",
        "10.88.0.1",
    );
    seen(
        "from the host, localhost",
        &w.host,
        "127.0.0.1:9191",
        "10.88.0.1",
    );
    seen(
        "hairpin from itself",
        &w.c1,
        "192.168.50.1:8080",
        "10.88.0.1",
    );
    seen(
        "hairpin from a neighbour",
        &w.c2,
        "10.88.0.1:8080",
        "10.88.0.1",
    );
    assert!(
        tcp_echo(&w.outside, sa("192.168.50.1:9191"), b"x").is_err(),
        "localhost-only port reached from outside"
    );
    assert_eq!(
        udp_echo(&w.outside, sa("192.168.50.1:5353"), b"u").unwrap(),
        b"u"
    );

    // Unpublished: nothing reaches it any more.
    fw.publish_delete(who("c1")).unwrap();
    assert!(tcp_echo(&w.outside, sa("192.168.50.1:8080"), b"x").is_err());
    fw.masquerade_remove("net-a").unwrap();
    assert!(
        tcp_echo(&w.c1, out.addr(), b"m").is_err(),
        "masqueraded after remove"
    );
}

#[test]
fn ingress_policies_isolate_bridges_as_asked_and_delete_forgets_the_attachment() {
    let w = world();
    let fw = fw(&w.host);
    // A second bridge br1 with c3 (10.99.0.2).
    let c3 = ns();
    let h = &w.host;
    ip(h, "link add br1 type bridge");
    ip(h, "addr add 10.99.0.1/16 dev br1");
    ip(h, "link set br1 up");
    ip(
        h,
        &format!(
            "link add v3 type veth peer name eth0 netns {}",
            c3.path().display()
        ),
    );
    ip(h, "link set v3 master br1");
    ip(h, "link set v3 up");
    ip(&c3, "addr add 10.99.0.2/16 dev eth0");
    ip(&c3, "link set eth0 up");
    ip(&c3, "route add default via 10.99.0.1");
    let srv = EchoServer::tcp(&c3, sa("10.99.0.2:80"));
    let pol = |ingress, bridge: &str| FilterPolicy {
        admin_chain: "CNI-ADMIN".into(),
        ingress,
        bridge: Some(bridge.into()),
    };
    let ip1 = ["10.88.0.2".parse().unwrap()];
    let ip3 = ["10.99.0.2".parse().unwrap()];
    let w3 = AttachmentId {
        network: "net-b",
        container_id: "c3",
        ifname: "eth0",
    };
    fw.filter_add(who("c1"), &ip1, &pol(IngressPolicy::Open, "br0"))
        .unwrap();
    fw.filter_add(w3, &ip3, &pol(IngressPolicy::Open, "br1"))
        .unwrap();
    assert!(
        tcp_echo(&w.c1, srv.addr(), b"o").is_ok(),
        "open bridges isolated"
    );
    fw.filter_add(who("c1"), &ip1, &pol(IngressPolicy::SameBridge, "br0"))
        .unwrap();
    assert!(
        tcp_echo(&w.c1, srv.addr(), b"o").is_ok(),
        "one same-bridge bridge isolated from an open one"
    );
    fw.filter_add(w3, &ip3, &pol(IngressPolicy::SameBridge, "br1"))
        .unwrap();
    assert!(
        tcp_echo(&w.c1, srv.addr(), b"o").is_err(),
        "two same-bridge bridges talk"
    );
    fw.filter_check(who("c1"), &ip1, &pol(IngressPolicy::SameBridge, "br0"))
        .unwrap();
    assert!(matches!(
        fw.filter_check(who("c1"), &ip1, &pol(IngressPolicy::Isolated, "br0")),
        Err(Error::Check(_))
    ));
    // CHECK sees a lost address and a lost rule.
    nft(h, "delete element inet tether allow4 { 10.88.0.2 }");
    assert!(matches!(
        fw.filter_check(who("c1"), &ip1, &pol(IngressPolicy::SameBridge, "br0")),
        Err(Error::Check(_))
    ));
    fw.filter_add(who("c1"), &ip1, &pol(IngressPolicy::SameBridge, "br0"))
        .unwrap();
    nft(h, "flush chain inet tether forward");
    assert!(matches!(
        fw.filter_check(who("c1"), &ip1, &pol(IngressPolicy::SameBridge, "br0")),
        Err(Error::Check(_))
    ));
    fw.filter_add(who("c1"), &ip1, &pol(IngressPolicy::SameBridge, "br0"))
        .unwrap();
    fw.filter_check(who("c1"), &ip1, &pol(IngressPolicy::SameBridge, "br0"))
        .unwrap();
    // DEL without known addresses (no prevResult) finds them from the record; twice is fine.
    fw.filter_delete(who("c1"), &[]).unwrap();
    fw.filter_delete(who("c1"), &[]).unwrap();
    assert!(!list(h).contains("10.88.0.2"));
    fw.filter_gc("net-b", &[]).unwrap();
    assert!(!list(h).contains("10.99.0.2"), "{}", list(h));
}

/// Rules of our table, as `nft` prints them (lines inside chains that are not declarations).
fn rule_lines(ns: &Netns) -> usize {
    let mut in_chain = false;
    list(ns)
        .lines()
        .map(str::trim)
        .filter(|l| {
            if l.starts_with("chain ") {
                in_chain = true;
                return false;
            }
            if *l == "}" {
                in_chain = false;
            }
            in_chain && !l.starts_with("type ") && !l.starts_with("comment ") && *l != "}"
        })
        .count()
}

#[test]
fn rules_stay_flat_while_attachments_and_published_ports_grow() {
    let ns = ns();
    let fw = fw(&ns);
    fw.masquerade_ensure("net-a", &[net("10.88.0.1/16")], true)
        .unwrap();
    let add = |i: u16| {
        let cid = format!("c{i}");
        let w = AttachmentId {
            network: "net-a",
            container_id: &cid,
            ifname: "eth0",
        };
        let a = net(&format!("10.88.{}.{}/16", i / 200, i % 200 + 2));
        let p = policy(vec![
            map(Proto::Tcp, 20000 + i, 80, HostIp::Any),
            map(Proto::Sctp, 20000 + i, 80, HostIp::Any),
        ]);
        fw.publish_add(w, &[a], &p).unwrap();
    };
    add(0);
    let rules = rule_lines(&ns);
    for i in 1..500 {
        add(i);
    }
    assert_eq!(rule_lines(&ns), rules, "rules grew with attachments");
    let text = list(&ns);
    assert!(text.contains("sctp . 20499 comment"), "{text}");
    assert!(text.matches("comment \"tether net=net-a id=c").count() > 2000);
    let gone = fw.publish_gc("net-a", &[]).unwrap();
    assert_eq!(gone.len(), 1000);
    fw.masquerade_remove("net-a").unwrap();
    assert_eq!(list(&ns), expected_bare());
}

#[test]
fn a_shared_map_deleted_by_hand_fails_check_and_the_next_add_recreates_it() {
    let ns = ns();
    let fw = fw(&ns);
    let p = two_mappings();
    fw.publish_add(who("c1"), &addrs(), &p).unwrap();
    let good = list(&ns);
    // The map is in use by a rule: whoever deletes it has to flush the chain first.
    nft(&ns, "flush chain inet tether publish");
    nft(&ns, "delete map inet tether ports4");
    match fw.publish_check(who("c1"), &addrs(), &p) {
        Err(Error::Check(_)) => {}
        other => panic!("CHECK after the map went: {other:?}"),
    }
    fw.publish_add(who("c1"), &addrs(), &p).unwrap();
    // The same objects (the recreated map is listed last).
    let sorted = |t: String| {
        let mut l: Vec<String> = t.lines().map(String::from).collect();
        l.sort();
        l
    };
    assert_eq!(sorted(list(&ns)), sorted(good));
    fw.publish_check(who("c1"), &addrs(), &p).unwrap();
    fw.publish_delete(who("c1")).unwrap();
    assert_eq!(sorted(list(&ns)), sorted(expected_bare()));
}
