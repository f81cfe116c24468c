//! The element operations and narrow reads the nftables firewall backend is built on:
//! concatenated ranges (pipapo), ensure (add when missing), destroy (delete when present),
//! flush and destroy of chains and sets, and reading back one set, one element, the sets,
//! chains and rule comments of a table, each checked against `nft list` and real packets.

mod common;

use std::net::Ipv4Addr;

use common::*;
use netns_fixtures::TestHost;
use tether_nft::{Batch, Chain, DataType, Elem, Error, Expr, Rule, Set, SetData, Value};

fn v4(s: &str) -> Value {
    Value::Ipv4(s.parse::<Ipv4Addr>().unwrap())
}

fn ranges() -> Set {
    Set::new(
        "pairs",
        &[DataType::Ipv4Addr, DataType::Ipv4Addr],
        SetData::None,
        true,
    )
    .unwrap()
    .comment("container . sources")
    .unwrap()
}

#[test]
fn concatenated_ranges_read_back_as_prefixes_and_ensure_and_destroy_are_idempotent() {
    let h = TestHost::new();
    let ns = h.container();
    let t = table();
    let mut b = Batch::new();
    b.add_table(&t).add_set(&t, &ranges()).add_set(&t, &ports());
    let e = Elem::range(
        &[v4("10.88.0.2"), v4("10.88.0.0")],
        &[v4("10.88.0.2"), v4("10.88.255.255")],
    )
    .comment("c1")
    .unwrap();
    b.ensure_elements(&t, &ranges(), std::slice::from_ref(&e))
        .unwrap();
    b.add_elements(
        &t,
        &ports(),
        &[port(6, 8080, "10.88.0.2".parse().unwrap(), 80)],
    )
    .unwrap();
    apply(&ns, &b).unwrap();
    let text = list_table(&ns);
    assert!(
        text.contains("\t\ttype ipv4_addr . ipv4_addr\n\t\tflags interval\n\t\tcomment \"container . sources\"\n\t\telements = { 10.88.0.2 . 10.88.0.0/16 comment \"c1\" }"),
        "{text}"
    );
    // Ensure again: no error, nothing doubled; add (EXCL) again: Exists, and nothing applied.
    let mut again = Batch::new();
    again
        .ensure_elements(&t, &ranges(), std::slice::from_ref(&e))
        .unwrap();
    apply(&ns, &again).unwrap();
    let mut excl = Batch::new();
    excl.destroy_elements(&t, &ranges(), std::slice::from_ref(&e))
        .unwrap();
    excl.add_elements(
        &t,
        &ports(),
        &[port(6, 8080, "10.88.0.3".parse().unwrap(), 80)],
    )
    .unwrap();
    assert!(matches!(apply(&ns, &excl), Err(Error::Exists { .. })));
    assert_eq!(list_table(&ns), text, "a failed batch changed something");

    let mut nft = tether_nft::Nft::for_netns(std::os::fd::AsFd::as_fd(&ns)).unwrap();
    // Reads: one set, one element (present, absent), the table's sets.
    let got = nft.elements(&t, &ranges()).unwrap();
    assert_eq!(got, std::slice::from_ref(&e));
    let key = Elem::key(&[Value::Proto(6), Value::Port(8080)]);
    let found = nft.element(&t, &ports(), &key).unwrap().unwrap();
    assert_eq!(found.data, Some(vec![v4("10.88.0.2"), Value::Port(80)]));
    let absent = Elem::key(&[Value::Proto(17), Value::Port(8080)]);
    assert_eq!(nft.element(&t, &ports(), &absent).unwrap(), None);
    assert!(matches!(
        nft.element(&t, &subnets(), &Elem::key(&[v4("10.0.0.1")])),
        Err(Error::NotFound { .. })
    ));
    assert!(nft.table_exists(&t).unwrap());
    let names: Vec<String> = nft.sets(&t).unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["pairs", "ports"]);

    // A chain with a rule: comments read back; flush empties it; destroy twice is fine.
    let mut c = Batch::new();
    c.add_chain(&t, &Chain::regular("x").unwrap().comment("mine").unwrap());
    c.add_rule(
        &t,
        &Rule::new("x", vec![Expr::Counter])
            .unwrap()
            .comment("r1")
            .unwrap(),
    );
    c.add_rule(&t, &Rule::new("x", vec![Expr::Counter]).unwrap());
    apply(&ns, &c).unwrap();
    assert_eq!(
        nft.rule_comments(&t, "x").unwrap(),
        [Some("r1".to_string()), None]
    );
    let chains = nft.chains(&t).unwrap();
    assert_eq!(
        chains
            .iter()
            .map(|c| c.comment.as_deref())
            .collect::<Vec<_>>(),
        [Some("mine")]
    );
    let mut f = Batch::new();
    f.flush_chain(&t, "x");
    apply(&ns, &f).unwrap();
    assert!(nft.rule_comments(&t, "x").unwrap().is_empty());
    for _ in 0..2 {
        let mut d = Batch::new();
        d.destroy_chain(&t, "x").destroy_set(&t, "pairs");
        d.destroy_elements(&t, &ports(), std::slice::from_ref(&key))
            .unwrap();
        apply(&ns, &d).unwrap();
    }
    assert!(nft.chains(&t).unwrap().is_empty());
    assert_eq!(nft.element(&t, &ports(), &key).unwrap(), None);
    let mut gone = Batch::new();
    gone.delete_table(&t);
    apply(&ns, &gone).unwrap();
    assert!(matches!(nft.sets(&t), Err(Error::NotFound { .. })));
    assert!(!nft.table_exists(&t).unwrap());
}
