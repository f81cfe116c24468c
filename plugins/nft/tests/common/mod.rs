//! The layout the tests build: one network's masquerade and its published ports.
//!
//! ```text
//!  table inet tether_test
//!   set subnets  { type ipv4_addr; flags interval }          10.88.0.0/16
//!   map ports    { type inet_proto . inet_service : ipv4_addr . inet_service }
//!   chain postrouting  nat/postrouting/srcnat:  ip saddr @subnets ip daddr != @subnets
//!                                               ip daddr != 224.0.0.0/4 counter masquerade
//!   chain prerouting   nat/prerouting/dstnat:   jump published
//!   chain published    regular:                 dnat ip to meta l4proto . th dport map @ports
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
        .add_set(&t, &ports())
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
    b.add_rule(&t, &masquerade_rule());
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
