//! The layout the tests build: one network's masquerade and its published ports.
//!
//! ```text
//!  table inet tether_test
//!   set subnets  { type ipv4_addr; flags interval }          10.88.0.0/16
//!   set subnets6 { type ipv6_addr; flags interval }          fd00:88::/64
//!   map ports    { type inet_proto . inet_service : ipv4_addr . inet_service }
//!   map ports6   { type inet_proto . inet_service : ipv6_addr . inet_service }
//!   map isolation { type ifname : verdict }
//!   chain postrouting  nat/postrouting/srcnat:  ip saddr @subnets ip daddr != @subnets
//!                                               ip daddr != 224.0.0.0/4 counter masquerade
//!                                               (the same for ip6, ff00::/8)
//!   chain prerouting   nat/prerouting/dstnat:   jump published
//!   chain output       nat/output/-100:         ip daddr != 127.0.0.0/8 jump published
//!   chain published    regular:                 dnat ip  to meta l4proto . th dport map @ports
//!                                               dnat ip6 to meta l4proto . th dport map @ports6
//!   chain forward      filter/forward/filter:   oifname vmap @isolation
//! ```

#![allow(dead_code)]

use std::os::fd::AsFd;

use netns_fixtures::Netns;
use tether_nft::expr;
use tether_nft::{
    BaseChain, Batch, Chain, ChainType, CmpOp, DataType, Elem, Expr, Family, Hook, Nft, Policy,
    Rule, Set, SetData, Table, Value, Verdict,
};

pub const TABLE: &str = "tether_test";

pub fn table() -> Table {
    Table::new(Family::Inet, TABLE)
        .unwrap()
        .comment("tether test layout")
        .unwrap()
}

pub fn subnets() -> Set {
    Set::new("subnets", &[DataType::Ipv4Addr], SetData::None, true)
        .unwrap()
        .comment("subnets of network test")
        .unwrap()
}

pub fn subnets6() -> Set {
    Set::new("subnets6", &[DataType::Ipv6Addr], SetData::None, true)
        .unwrap()
        .comment("IPv6 subnets of network test")
        .unwrap()
}

pub fn isolation() -> Set {
    Set::new("isolation", &[DataType::IfName], SetData::Verdict, false).unwrap()
}

pub fn ports6() -> Set {
    let data = SetData::Value(tether_nft::Concat(vec![
        DataType::Ipv6Addr,
        DataType::InetService,
    ]));
    Set::new(
        "ports6",
        &[DataType::InetProto, DataType::InetService],
        data,
        false,
    )
    .unwrap()
}

pub fn ports() -> Set {
    Set::new(
        "ports",
        &[DataType::InetProto, DataType::InetService],
        SetData::Value(tether_nft::Concat(vec![
            DataType::Ipv4Addr,
            DataType::InetService,
        ])),
        false,
    )
    .unwrap()
    .comment("published ports")
    .unwrap()
}

fn nat_chain(name: &str, hook: Hook, priority: i32) -> Chain {
    let base = BaseChain {
        chain_type: ChainType::Nat,
        hook,
        priority,
        policy: Policy::Accept,
    };
    Chain::base(name, base).unwrap()
}

pub fn masquerade_rule() -> Rule {
    let mut e = expr::nfproto_ipv4();
    e.push(expr::ip_addr(true));
    e.push(expr::in_set("subnets", false));
    e.push(expr::ip_addr(false));
    e.push(expr::in_set("subnets", true));
    e.extend(expr::not_multicast_v4());
    e.push(Expr::Counter);
    e.push(Expr::Masquerade);
    Rule::new("postrouting", e)
        .unwrap()
        .comment("masquerade network test")
        .unwrap()
}

pub fn masquerade6_rule() -> Rule {
    let mut e = expr::nfproto_ipv6();
    e.push(expr::ip6_addr(true));
    e.push(expr::in_set("subnets6", false));
    e.push(expr::ip6_addr(false));
    e.push(expr::in_set("subnets6", true));
    e.extend(expr::not_multicast_v6());
    e.push(Expr::Counter);
    e.push(Expr::Masquerade);
    Rule::new("postrouting", e)
        .unwrap()
        .comment("masquerade network test, IPv6")
        .unwrap()
}

pub fn dnat6_rule() -> Rule {
    let mut e = expr::nfproto_ipv6();
    e.extend(expr::dnat_v6_via_map("ports6"));
    Rule::new("published", e).unwrap()
}

pub fn dnat_rule() -> Rule {
    let mut e = expr::nfproto_ipv4();
    e.extend(expr::dnat_v4_via_map("ports"));
    Rule::new("published", e)
        .unwrap()
        .comment("published ports, IPv4")
        .unwrap()
}

/// The whole layout, with the network's subnet, in one batch.
pub fn layout() -> Batch {
    let t = table();
    let mut b = Batch::new();
    b.add_table(&t)
        .add_set(&t, &subnets())
        .add_set(&t, &subnets6())
        .add_set(&t, &ports())
        .add_set(&t, &ports6())
        .add_set(&t, &isolation())
        .add_chain(&t, &nat_chain("postrouting", Hook::Postrouting, 100))
        .add_chain(&t, &nat_chain("prerouting", Hook::Prerouting, -100))
        .add_chain(&t, &nat_chain("output", Hook::Output, -100))
        .add_chain(
            &t,
            &Chain::regular("published")
                .unwrap()
                .comment("port publishing")
                .unwrap(),
        );
    b.add_elements(
        &t,
        &subnets(),
        &[Elem::prefix("10.88.0.0/16".parse().unwrap()).unwrap()],
    )
    .unwrap();
    b.add_elements(
        &t,
        &subnets6(),
        &[Elem::prefix("fd00:88::/64".parse().unwrap()).unwrap()],
    )
    .unwrap();
    b.add_rule(&t, &masquerade_rule());
    b.add_rule(&t, &masquerade6_rule());
    let jump = |chain: &str| {
        Rule::new(
            chain,
            vec![Expr::Immediate(Verdict::Jump("published".into()))],
        )
        .unwrap()
    };
    b.add_rule(&t, &jump("prerouting"));
    // Locally originated connections to published ports, only to local addresses (`fib daddr
    // type local` is not modelled yet; 127.0.0.0/8 is left alone for the route_localnet guard).
    let mut out = expr::nfproto_ipv4();
    out.extend(expr::ip_prefix(
        false,
        "127.0.0.0/8".parse().unwrap(),
        CmpOp::Neq,
    ));
    out.push(Expr::Immediate(Verdict::Jump("published".into())));
    b.add_rule(&t, &Rule::new("output", out).unwrap());
    b.add_rule(&t, &dnat_rule());
    b.add_rule(&t, &dnat6_rule());
    let forward = BaseChain {
        chain_type: ChainType::Filter,
        hook: Hook::Forward,
        priority: 0,
        policy: Policy::Accept,
    };
    b.add_chain(&t, &Chain::base("forward", forward).unwrap());
    let vmap = vec![
        expr::meta(tether_nft::MetaKey::OifName),
        expr::vmap("isolation"),
    ];
    b.add_rule(&t, &Rule::new("forward", vmap).unwrap());
    b
}

/// A published port: `proto . port : addr . port`.
pub fn port(proto: u8, port: u16, to: std::net::Ipv4Addr, to_port: u16) -> Elem {
    Elem::key(&[Value::Proto(proto), Value::Port(port)])
        .to(&[Value::Ipv4(to), Value::Port(to_port)])
}

pub fn apply(ns: &Netns, b: &Batch) -> tether_nft::Result<()> {
    Nft::for_netns(ns.as_fd())?.apply(b)
}

pub fn list_table(ns: &Netns) -> String {
    ns.sh("nft", &["list", "table", "inet", TABLE])
}

pub fn ruleset(ns: &Netns) -> String {
    ns.sh("nft", &["list", "ruleset"])
}
