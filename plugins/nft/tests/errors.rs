//! All or nothing: a batch the kernel refuses leaves the ruleset as it was, and says which
//! object failed with a typed error. Bad objects are refused before anything is sent.

mod common;

use common::*;
use netns_fixtures::TestHost;
use tether_nft::{
    Batch, Chain, Concat, DataType, Elem, Error, Expr, Family, Rule, Set, SetData, Table, Value,
    Verdict,
};

#[test]
fn a_rule_for_a_missing_chain_fails_the_batch_and_leaves_nothing() {
    let h = TestHost::new();
    let before = ruleset(&h);
    let mut b = layout();
    let stray = Rule::new("nowhere", vec![Expr::Immediate(Verdict::Accept)]).unwrap();
    b.add_rule(&table(), &stray);

    let err = apply(&h, &b).unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { op } if op.contains("chain nowhere")),
        "{err:?}"
    );
    assert_eq!(ruleset(&h), before, "nothing of the failed batch is left");
}

#[test]
fn a_duplicate_element_fails_the_batch_and_keeps_the_set_as_it_was() {
    let h = TestHost::new();
    apply(&h, &layout()).unwrap();
    let t = table();
    let mut b = Batch::new();
    b.add_elements(
        &t,
        &ports(),
        &[port(6, 80, "10.88.0.2".parse().unwrap(), 80)],
    )
    .unwrap();
    apply(&h, &b).unwrap();
    let before = list_table(&h);

    let mut b = Batch::new();
    b.add_elements(
        &t,
        &ports(),
        &[port(17, 53, "10.88.0.3".parse().unwrap(), 53)],
    )
    .unwrap();
    b.add_elements(
        &t,
        &ports(),
        &[port(6, 80, "10.88.0.9".parse().unwrap(), 8080)],
    )
    .unwrap();
    let err = apply(&h, &b).unwrap_err();
    assert!(
        matches!(&err, Error::Exists { op } if op.contains("ports")),
        "{err:?}"
    );
    assert_eq!(err.errno(), Some(libc::EEXIST));
    assert_eq!(
        list_table(&h),
        before,
        "the first element of the batch is not there"
    );

    let mut teardown = Batch::new();
    teardown.delete_table(&t);
    apply(&h, &teardown).unwrap();
    assert_eq!(ruleset(&h), "");
}

#[test]
fn deleting_what_is_not_there_is_not_found() {
    let h = TestHost::new();
    let t = table();
    let mut b = Batch::new();
    b.delete_table(&t);
    let err = apply(&h, &b).unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { op } if op == "delete table inet tether_test"),
        "{err:?}"
    );

    apply(&h, &layout()).unwrap();
    let mut b = Batch::new();
    b.delete_elements(&t, &ports(), &[port(6, 1, "10.88.0.2".parse().unwrap(), 1)])
        .unwrap();
    let err = apply(&h, &b).unwrap_err();
    assert!(matches!(&err, Error::NotFound { .. }), "{err:?}");

    // The socket is still usable after an error: the next batch succeeds.
    let mut teardown = Batch::new();
    teardown.delete_table(&t);
    apply(&h, &teardown).unwrap();
    assert_eq!(ruleset(&h), "");
}

#[test]
fn one_socket_carries_many_batches_with_errors_in_between() {
    let h = TestHost::new();
    let mut nft = tether_nft::Nft::for_netns(std::os::fd::AsFd::as_fd(&*h)).unwrap();
    nft.apply(&layout()).unwrap();
    let t = table();
    let mut dup = Batch::new();
    dup.add_elements(
        &t,
        &ports(),
        &[port(6, 80, "10.88.0.2".parse().unwrap(), 80)],
    )
    .unwrap();
    nft.apply(&dup).unwrap();
    assert!(matches!(nft.apply(&dup), Err(Error::Exists { .. })));
    let mut teardown = Batch::new();
    teardown.delete_table(&t);
    nft.apply(&teardown).unwrap();
    nft.apply(&Batch::new()).unwrap();
    assert_eq!(ruleset(&h), "");
}

#[test]
fn without_cap_net_admin_the_batch_is_permission_denied_and_nothing_changes() {
    let h = TestHost::new();
    let before = ruleset(&h);
    // Capabilities are per thread: this one drops CAP_NET_ADMIN, then opens and uses the socket.
    let err = h.run(|| {
        caps::drop(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_NET_ADMIN,
        )
        .expect("drop CAP_NET_ADMIN from this thread");
        tether_nft::Nft::current().and_then(|mut nft| nft.apply(&layout()))
    });
    assert!(
        matches!(&err, Err(Error::PermissionDenied { op }) if op == "begin the batch"),
        "{err:?}"
    );
    assert_eq!(ruleset(&h), before);
}

#[test]
fn bad_objects_are_refused_before_anything_is_sent() {
    let invalid = |r: tether_nft::Result<()>| assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}");
    invalid(Table::new(Family::Inet, "").map(drop));
    invalid(Table::new(Family::Inet, &"x".repeat(256)).map(drop));
    invalid(
        Table::new(Family::Inet, "t")
            .unwrap()
            .comment(&"c".repeat(129))
            .map(drop),
    );
    invalid(Chain::regular("a\0b").map(drop));
    invalid(Rule::new("c", vec![]).map(drop));
    invalid(Elem::prefix("10.88.0.1/16".parse().unwrap()).map(drop));

    let t = table();
    let mut b = Batch::new();
    // Wrong key type, missing data, data for a plain set, a prefix in a non-interval map, none.
    invalid(
        b.add_elements(&t, &ports(), &[Elem::key(&[Value::Port(80)])])
            .map(drop),
    );
    let key = [Value::Proto(6), Value::Port(80)];
    invalid(b.add_elements(&t, &ports(), &[Elem::key(&key)]).map(drop));
    let addr = Value::Ipv4("10.0.0.1".parse().unwrap());
    invalid(
        b.add_elements(&t, &subnets(), &[Elem::key(&[addr]).to(&[addr])])
            .map(drop),
    );
    let v = Set::new(
        "v",
        &[DataType::Ipv4Addr],
        SetData::Value(Concat(vec![DataType::Ipv4Addr])),
        false,
    )
    .unwrap();
    invalid(
        b.add_elements(
            &t,
            &v,
            &[Elem::prefix("10.0.0.0/8".parse().unwrap())
                .unwrap()
                .to(&[addr])],
        )
        .map(drop),
    );
    invalid(b.add_elements(&t, &ports(), &[]).map(drop));
    // A key end outside a concatenated interval set; a prefix inside one.
    let end = Elem::range(&key, &key);
    invalid(b.add_elements(&t, &ports(), &[end]).map(drop));
    let ranges = Set::new(
        "r",
        &[DataType::Ipv4Addr, DataType::Ipv4Addr],
        SetData::None,
        true,
    )
    .unwrap();
    invalid(
        b.add_elements(
            &t,
            &ranges,
            &[Elem::prefix("10.0.0.0/8".parse().unwrap()).unwrap()],
        )
        .map(drop),
    );
    assert!(b.is_empty(), "refused elements are not queued");
}
