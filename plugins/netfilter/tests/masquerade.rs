//! ipMasq against the real kernel, in throwaway namespaces, on both iptables backends.

mod common;

use common::*;
use tether_netfilter::{
    Error, Family, MASQ_CHAIN_PREFIX, chain_name, comment, masquerade_add, masquerade_check,
    masquerade_del, masquerade_gc,
};

const NET: &str = "testnet";

#[test]
fn add_writes_the_reference_layout_and_del_restores_exactly() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        foreign_rules(&ns, &tools);
        let before = snapshot_all(&ns, &tools);
        let v6_before = snapshot(&ns, &tools, Family::V6);

        masquerade_add(&nf, NET, "c1", "eth0", &[net("10.88.0.2/16")]).unwrap();
        let chain = chain_name(MASQ_CHAIN_PREFIX, NET, "c1", "eth0");
        let c = comment(NET, "c1", "eth0");
        let after = snapshot(&ns, &tools, Family::V4);
        for line in [
            format!(":{chain} - [0:0]"),
            format!("-A POSTROUTING -s 10.88.0.2/32 -m comment --comment \"{c}\" -j {chain}"),
            format!("-A {chain} -d 10.88.0.0/16 -m comment --comment \"{c}\" -j ACCEPT"),
            format!("-A {chain} ! -d 224.0.0.0/4 -m comment --comment \"{c}\" -j MASQUERADE"),
        ] {
            assert!(
                after.lines().any(|l| l == line),
                "{backend}: missing {line:?} in\n{after}"
            );
        }
        assert_eq!(after.matches(&chain).count(), 4, "{backend}:\n{after}");
        masquerade_check(&nf, NET, "c1", "eth0", &[net("10.88.0.2/16")]).unwrap();
        // v6 side untouched.
        assert_eq!(snapshot(&ns, &tools, Family::V6), v6_before, "{backend}");

        masquerade_del(&nf, NET, "c1", "eth0", &[net("10.88.0.2/16")]).unwrap();
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
        // Twice, and then the check must fail.
        masquerade_del(&nf, NET, "c1", "eth0", &[net("10.88.0.2/16")]).unwrap();
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
        let err = masquerade_check(&nf, NET, "c1", "eth0", &[net("10.88.0.2/16")]).unwrap_err();
        assert!(matches!(err, Error::Check(_)), "{backend}: {err}");
    }
}

#[test]
fn del_of_unknown_container_succeeds_and_touches_nothing() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        foreign_rules(&ns, &tools);
        masquerade_add(&nf, NET, "keep", "eth0", &[net("10.88.0.3/16")]).unwrap();
        let before = snapshot_all(&ns, &tools);
        masquerade_del(&nf, NET, "nope", "eth0", &[]).unwrap();
        masquerade_del(&nf, NET, "nope", "eth0", &[net("10.88.0.9/16")]).unwrap();
        // Same container, other interface / other network: different attachment.
        masquerade_del(&nf, NET, "keep", "eth1", &[]).unwrap();
        masquerade_del(&nf, "othernet", "keep", "eth0", &[]).unwrap();
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
        masquerade_check(&nf, NET, "keep", "eth0", &[net("10.88.0.3/16")]).unwrap();
    }
}

#[test]
fn del_without_known_addresses_reads_the_table() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        foreign_rules(&ns, &tools);
        let before = snapshot_all(&ns, &tools);
        let addrs = [
            net("10.88.0.4/16"),
            net("10.99.0.4/24"),
            net("fd00::4/64"),
            net("fd01::4/64"),
        ];
        masquerade_add(&nf, NET, "c4", "eth0", &addrs).unwrap();
        masquerade_check(&nf, NET, "c4", "eth0", &addrs).unwrap();
        // No netns, no prevResult: nothing known.
        masquerade_del(&nf, NET, "c4", "eth0", &[]).unwrap();
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
    }
}

#[test]
fn del_with_wrong_or_partial_known_addresses_falls_back() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        foreign_rules(&ns, &tools);
        let before = snapshot_all(&ns, &tools);

        masquerade_add(&nf, NET, "c5", "eth0", &[net("10.88.0.5/16")]).unwrap();
        masquerade_del(&nf, NET, "c5", "eth0", &[net("10.88.0.55/16")]).unwrap();
        assert_eq!(
            snapshot_all(&ns, &tools),
            before,
            "{backend}: stale address"
        );

        // Two addresses added, only one known: the exact batch cannot delete the chain (still
        // referenced), so it must fail as a whole and the slow path must clean both.
        let two = [net("10.88.0.6/16"), net("10.88.0.7/16")];
        masquerade_add(&nf, NET, "c6", "eth0", &two).unwrap();
        masquerade_del(&nf, NET, "c6", "eth0", &two[..1]).unwrap();
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}: partial list");

        // A repeated ADD leaves two jumps; DEL with the known address still removes all.
        masquerade_add(&nf, NET, "c7", "eth0", &[net("10.88.0.8/16")]).unwrap();
        masquerade_add(&nf, NET, "c7", "eth0", &[net("10.88.0.8/16")]).unwrap();
        masquerade_del(&nf, NET, "c7", "eth0", &[net("10.88.0.8/16")]).unwrap();
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}: repeated add");
    }
}

#[test]
fn ipv6_and_dual_stack() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        foreign_rules(&ns, &tools);
        let before = snapshot_all(&ns, &tools);
        let v4_before = snapshot(&ns, &tools, Family::V4);

        masquerade_add(&nf, NET, "c6", "eth0", &[net("fd00:1::6/64")]).unwrap();
        let chain = chain_name(MASQ_CHAIN_PREFIX, NET, "c6", "eth0");
        let v6 = snapshot(&ns, &tools, Family::V6);
        assert!(
            v6.contains(&format!(
                "-A POSTROUTING -s fd00:1::6/128 -m comment --comment \"{}\" -j {chain}",
                comment(NET, "c6", "eth0")
            )),
            "{backend}:\n{v6}"
        );
        assert!(v6.contains(&format!("-A {chain} -d fd00:1::/64 ")), "{v6}");
        assert!(
            v6.contains(&format!("-A {chain} ! -d ff00::/8 ")),
            "{backend}:\n{v6}"
        );
        assert_eq!(snapshot(&ns, &tools, Family::V4), v4_before, "{backend}");
        masquerade_del(&nf, NET, "c6", "eth0", &[net("fd00:1::6/64")]).unwrap();
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");

        let dual = [net("10.88.0.6/16"), net("fd00:1::6/64")];
        masquerade_add(&nf, NET, "c6", "eth0", &dual).unwrap();
        masquerade_check(&nf, NET, "c6", "eth0", &dual).unwrap();
        masquerade_del(&nf, NET, "c6", "eth0", &dual).unwrap();
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
    }
}

#[test]
fn gc_keeps_valid_attachments_and_removes_the_rest() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        foreign_rules(&ns, &tools);
        let before = snapshot_all(&ns, &tools);
        let a = [net("10.88.0.10/16"), net("fd00::10/64")];
        masquerade_add(&nf, NET, "a", "eth0", &a).unwrap();
        masquerade_add(&nf, NET, "b", "eth0", &[net("10.88.0.11/16")]).unwrap();
        masquerade_add(&nf, NET, "a", "eth1", &[net("fd00::12/64")]).unwrap();
        masquerade_add(&nf, "othernet", "x", "eth0", &[net("10.77.0.2/16")]).unwrap();

        let valid = [("a".to_string(), "eth0".to_string())];
        assert_eq!(masquerade_gc(&nf, NET, &valid).unwrap(), 2, "{backend}");
        masquerade_check(&nf, NET, "a", "eth0", &a).unwrap();
        masquerade_check(&nf, "othernet", "x", "eth0", &[net("10.77.0.2/16")]).unwrap();
        for (cid, ifname, addr) in [("b", "eth0", "10.88.0.11/16"), ("a", "eth1", "fd00::12/64")] {
            assert!(
                masquerade_check(&nf, NET, cid, ifname, &[net(addr)]).is_err(),
                "{backend}: {cid}/{ifname} survived gc"
            );
            let chain = chain_name(MASQ_CHAIN_PREFIX, NET, cid, ifname);
            assert!(!snapshot_all(&ns, &tools).contains(&chain), "{backend}");
        }
        assert_eq!(masquerade_gc(&nf, NET, &valid).unwrap(), 0, "{backend}");

        // Nothing valid on either network: back to the initial state.
        assert_eq!(masquerade_gc(&nf, NET, &[]).unwrap(), 1, "{backend}");
        assert_eq!(masquerade_gc(&nf, "othernet", &[]).unwrap(), 1, "{backend}");
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
    }
}

#[test]
fn twenty_parallel_adds_and_dels_in_one_namespace() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        let before = snapshot_all(&ns, &tools);
        let addr = |i: usize| net(&format!("10.88.1.{}/16", i + 2));
        std::thread::scope(|s| {
            for i in 0..20 {
                let nf = &nf;
                s.spawn(move || {
                    masquerade_add(nf, NET, &format!("par{i}"), "eth0", &[addr(i)])
                        .unwrap_or_else(|e| panic!("{backend}: add {i}: {e}"));
                });
            }
        });
        for i in 0..20 {
            masquerade_check(&nf, NET, &format!("par{i}"), "eth0", &[addr(i)]).unwrap();
        }
        std::thread::scope(|s| {
            for i in 0..20 {
                let nf = &nf;
                s.spawn(move || {
                    // Half through the fast path, half through the save path.
                    let known = if i % 2 == 0 { vec![addr(i)] } else { vec![] };
                    masquerade_del(nf, NET, &format!("par{i}"), "eth0", &known)
                        .unwrap_or_else(|e| panic!("{backend}: del {i}: {e}"));
                });
            }
        });
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
    }
}

#[test]
fn invalid_names_are_rejected_before_anything_runs() {
    let ns = ns();
    let tools = tether_netfilter::Tools::nft();
    let nf = nf(&ns, &tools);
    let before = snapshot_all(&ns, &tools);
    let a = [net("10.88.0.2/16")];
    for (n, c, i) in [
        ("bad net", "c", "eth0"),
        ("net", "c\"; -F", "eth0"),
        ("net", "c", "eth0\n-F"),
        ("net", "", "eth0"),
        ("net", "c", "this-is-too-long0"),
    ] {
        for r in [
            masquerade_add(&nf, n, c, i, &a),
            masquerade_del(&nf, n, c, i, &a),
            masquerade_check(&nf, n, c, i, &a),
        ] {
            assert!(
                matches!(r, Err(Error::Invalid { .. })),
                "{n:?} {c:?} {i:?}: {r:?}"
            );
        }
    }
    assert!(matches!(
        masquerade_gc(&nf, "a b", &[]),
        Err(Error::Invalid { .. })
    ));
    assert_eq!(snapshot_all(&ns, &tools), before);
}

#[test]
fn exact_del_with_known_addresses_never_reads_the_table() {
    for (backend, tools) in backends() {
        let ns = ns();
        foreign_rules(&ns, &tools);
        let before = snapshot_all(&ns, &tools);
        let dual = [net("10.88.0.20/16"), net("fd00::20/64")];
        masquerade_add(&nf(&ns, &tools), NET, "fast", "eth0", &dual).unwrap();
        // The hot path must not need iptables-save at all: make it unusable.
        let no_save = tether_netfilter::Tools {
            v4_save: "/bin/false".into(),
            v6_save: "/bin/false".into(),
            ..tools.clone()
        };
        let blind = nf(&ns, &no_save);
        masquerade_del(&blind, NET, "fast", "eth0", &dual).unwrap();
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
        // ...and the fallback does read it: with the rules gone, the exact batch fails and the
        // (broken) save is what reports the error.
        assert!(
            matches!(
                masquerade_del(&blind, NET, "fast", "eth0", &dual),
                Err(Error::Command { .. })
            ),
            "{backend}"
        );
    }
}
