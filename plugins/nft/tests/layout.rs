//! The layout as `nft` reads it back: exact text, JSON, elements added and deleted, rules that
//! do not grow with elements, and teardown.

mod common;

use common::*;
use netns_fixtures::TestHost;
use tether_nft::{Batch, Elem, Value, Verdict};

/// `nft list table inet tether_test` right after [`layout`] and [`more_elements`].
const FULL: &str = "table inet tether_test {
\tcomment \"tether test layout\"
\tset subnets {
\t\ttype ipv4_addr
\t\tflags interval
\t\tcomment \"subnets of network test\"
\t\telements = { 10.88.0.0/16, 10.99.0.0/24 comment \"second subnet\" }
\t}

\tset subnets6 {
\t\ttype ipv6_addr
\t\tflags interval
\t\tcomment \"IPv6 subnets of network test\"
\t\telements = { fd00:88::/64 }
\t}

\tmap ports {
\t\ttype inet_proto . inet_service : ipv4_addr . inet_service
\t\tcomment \"published ports\"
\t\telements = { udp . 53 : 10.88.0.3 . 5353,
\t\t\t     tcp . 8080 : 10.88.0.2 . 80 }
\t}

\tmap ports6 {
\t\ttype inet_proto . inet_service : ipv6_addr . inet_service
\t\telements = { tcp . 8080 : fd00:88::2 . 80 }
\t}

\tmap isolation {
\t\ttype ifname : verdict
\t\telements = { \"vc9\" : drop }
\t}

\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr @subnets ip daddr != @subnets ip daddr != 224.0.0.0/4 counter packets 0 bytes 0 masquerade comment \"masquerade network test\"
\t\tip6 saddr @subnets6 ip6 daddr != @subnets6 ip6 daddr != ff00::/8 counter packets 0 bytes 0 masquerade comment \"masquerade network test, IPv6\"
\t}

\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tjump published
\t}

\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr != 127.0.0.0/8 jump published
\t}

\tchain published {
\t\tcomment \"port publishing\"
\t\tmeta nfproto ipv4 dnat ip to meta l4proto . th dport map @ports comment \"published ports, IPv4\"
\t\tmeta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @ports6
\t}

\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\toifname vmap @isolation
\t}
}
";

fn more_elements() -> Batch {
    let t = table();
    let mut b = Batch::new();
    b.add_elements(
        &t,
        &ports(),
        &[
            port(6, 8080, "10.88.0.2".parse().unwrap(), 80),
            port(17, 53, "10.88.0.3".parse().unwrap(), 5353),
        ],
    )
    .unwrap();
    let second = Elem::prefix("10.99.0.0/24".parse().unwrap()).unwrap();
    b.add_elements(&t, &subnets(), &[second.comment("second subnet").unwrap()])
        .unwrap();
    let v6 = [Value::Ipv6("fd00:88::2".parse().unwrap()), Value::Port(80)];
    let key = [Value::Proto(6), Value::Port(8080)];
    b.add_elements(&t, &ports6(), &[Elem::key(&key).to(&v6)])
        .unwrap();
    let isolated = Elem::key(&[Value::ifname("vc9").unwrap()]).verdict(Verdict::Drop);
    b.add_elements(&t, &isolation(), &[isolated]).unwrap();
    b
}

fn json(h: &TestHost) -> serde_json::Value {
    let out = h.sh("nft", &["-j", "list", "ruleset"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("nft -j list ruleset: {e}: {out}"))
}

/// The objects of kind `kind` ("rule", "chain", "set", "map") in `nft -j` output.
fn objects<'a>(j: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    j["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|o| o.get(kind))
        .collect()
}

#[test]
fn layout_reads_back_exactly_in_nft_list_and_json_and_teardown_leaves_nothing() {
    let h = TestHost::new();
    let before = (ruleset(&h), h.snapshot(&[]));

    apply(&h, &layout()).unwrap();
    apply(&h, &more_elements()).unwrap();
    assert_eq!(list_table(&h), FULL);

    let j = json(&h);
    assert_eq!(objects(&j, "chain").len(), 5);
    assert_eq!(objects(&j, "rule").len(), 7);
    let maps = objects(&j, "map");
    assert_eq!(maps.len(), 3);
    assert_eq!(maps[0]["map"], "ipv4_addr . inet_service");
    assert_eq!(maps[0]["elem"].as_array().unwrap().len(), 2);
    assert_eq!(maps[2]["name"], "isolation");
    assert_eq!(maps[2]["map"], "verdict");
    let dnat = objects(&j, "rule")
        .into_iter()
        .find(|r| r["chain"] == "published")
        .expect("the DNAT rule");
    assert_eq!(dnat["comment"], "published ports, IPv4");
    assert_eq!(dnat["expr"][1]["dnat"]["addr"]["map"]["data"], "@ports");

    let t = table();
    let mut del = Batch::new();
    del.delete_elements(
        &t,
        &ports(),
        &[port(6, 8080, "10.88.0.2".parse().unwrap(), 80)],
    )
    .unwrap();
    let first = Elem::prefix("10.88.0.0/16".parse().unwrap()).unwrap();
    del.delete_elements(&t, &subnets(), &[first]).unwrap();
    apply(&h, &del).unwrap();
    let after_del = FULL.replace("10.88.0.0/16, ", "").replace(
        "udp . 53 : 10.88.0.3 . 5353,\n\t\t\t     tcp . 8080 : 10.88.0.2 . 80 }",
        "udp . 53 : 10.88.0.3 . 5353 }",
    );
    assert_eq!(list_table(&h), after_del);

    let mut teardown = Batch::new();
    teardown.delete_table(&t);
    apply(&h, &teardown).unwrap();
    assert_eq!((ruleset(&h), h.snapshot(&[])), before);
}

#[test]
fn rules_stay_flat_while_published_ports_grow() {
    let h = TestHost::new();
    apply(&h, &layout()).unwrap();
    let rules = objects(&json(&h), "rule").len();

    let t = table();
    let elems: Vec<Elem> = (0..500u16)
        .map(|i| port(6, 10000 + i, "10.88.0.2".parse().unwrap(), 80))
        .collect();
    let mut b = Batch::new();
    b.add_elements(&t, &ports(), &elems).unwrap();
    apply(&h, &b).unwrap();

    let j = json(&h);
    assert_eq!(objects(&j, "rule").len(), rules);
    assert_eq!(objects(&j, "map")[0]["elem"].as_array().unwrap().len(), 500);

    let mut teardown = Batch::new();
    teardown.delete_table(&t);
    apply(&h, &teardown).unwrap();
    assert_eq!(ruleset(&h), "");
}
