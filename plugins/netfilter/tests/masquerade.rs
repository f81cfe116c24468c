//! ipMasq (one shared chain per network and subnet) against the real kernel, in throwaway
//! namespaces, on both iptables backends.

mod common;

use common::*;
use tether_netfilter::{
    Error, Family, Tools, masq_chain_name, masq_comment, masquerade_check, masquerade_ensure,
};

const NET: &str = "testnet";

/// The masquerade lines of one family's nat table: our chains' rules and the jumps to them.
fn masq_lines(ns: &netns_fixtures::Netns, tools: &Tools, family: Family) -> Vec<String> {
    snapshot(ns, tools, family)
        .lines()
        .filter(|l| l.contains("TETHER-MASQ-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn first_add_writes_the_shared_chain_and_later_adds_change_nothing() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        foreign_rules(&ns, &tools);
        let before = snapshot_all(&ns, &tools);
        let v6_before = snapshot(&ns, &tools, Family::V6);

        masquerade_ensure(&nf, NET, &[net("10.88.0.2/16")], false).unwrap();
        let chain = masq_chain_name(NET, net("10.88.0.0/16"));
        let c = masq_comment(NET);
        let mut lines = masq_lines(&ns, &tools, Family::V4);
        lines.sort();
        let mut want = vec![
            format!(":{chain} - [0:0]"),
            format!("-A POSTROUTING -s 10.88.0.0/16 -m comment --comment \"{c}\" -j {chain}"),
            format!("-A {chain} -d 10.88.0.0/16 -m comment --comment \"{c}\" -j RETURN"),
            format!("-A {chain} -d 224.0.0.0/4 -m comment --comment \"{c}\" -j RETURN"),
            format!("-A {chain} -m comment --comment \"{c}\" -j MASQUERADE"),
        ];
        want.sort();
        assert_eq!(lines, want, "{backend}");
        masquerade_check(&nf, NET, &[net("10.88.0.2/16")]).unwrap();
        assert_eq!(snapshot(&ns, &tools, Family::V6), v6_before, "{backend}");

        // Other containers of the subnet: nothing changes, and their CHECK passes.
        let with_one = snapshot_all(&ns, &tools);
        for addr in ["10.88.0.3/16", "10.88.200.7/16", "10.88.0.2/16"] {
            masquerade_ensure(&nf, NET, &[net(addr)], false).unwrap();
            masquerade_check(&nf, NET, &[net(addr)]).unwrap();
        }
        assert_eq!(snapshot_all(&ns, &tools), with_one, "{backend}");
        // Everything else is as it was.
        let ours = |s: &str| {
            s.lines()
                .filter(|l| !l.contains("TETHER-MASQ-"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(ours(&with_one), ours(&before), "{backend}");
    }
}

#[test]
fn each_add_is_one_exec_per_family_when_the_hint_is_right() {
    for (backend, tools) in backends() {
        let ns = ns();
        let dual = [net("10.88.0.4/16"), net("fd00::4/64")];
        masquerade_ensure(&nf(&ns, &tools), NET, &dual, false).unwrap();
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let counted = Tools {
            v4_save: wrapper(dirs[0].path(), &tools.v4_save, 0, ""),
            v4_restore: wrapper(dirs[1].path(), &tools.v4_restore, 0, ""),
            v6_save: wrapper(dirs[2].path(), &tools.v6_save, 0, ""),
            v6_restore: wrapper(dirs[3].path(), &tools.v6_restore, 0, ""),
            ..tools.clone()
        };
        let nf = nf(&ns, &counted);
        let execs = || -> Vec<u32> { dirs.iter().map(|d| calls(d.path())).collect() };
        // In place: one restore of checks per family, no save, nothing written.
        let before = snapshot_all(&ns, &tools);
        masquerade_ensure(&nf, NET, &[net("10.88.0.5/16"), net("fd00::5/64")], false).unwrap();
        assert_eq!(
            execs(),
            [0, 1, 0, 1],
            "{backend}: v4 save, restore, v6 save, restore"
        );
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
        // A new network said to be new: one restore, no save.
        masquerade_ensure(&nf, "second", &[net("10.89.0.5/16")], true).unwrap();
        assert_eq!(execs(), [0, 2, 0, 1], "{backend}");
        // Not said to be new: the checks fail, the save finds it missing, one restore creates it.
        masquerade_ensure(&nf, "third", &[net("10.90.0.5/16")], false).unwrap();
        assert_eq!(execs(), [1, 4, 0, 1], "{backend}");
        // Said to be new, but in place: the create fails as a whole, the checks pass.
        let before = snapshot_all(&ns, &tools);
        masquerade_ensure(&nf, "third", &[net("10.90.0.6/16")], true).unwrap();
        assert_eq!(execs(), [1, 6, 0, 1], "{backend}");
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
        masquerade_check(&nf, "third", &[net("10.90.0.6/16")]).unwrap();
    }
}

#[test]
fn check_fails_for_each_damage_and_add_repairs_it() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        let addr = [net("10.88.0.6/16")];
        masquerade_ensure(&nf, NET, &addr, false).unwrap();
        let good = snapshot_all(&ns, &tools);
        let chain = masq_chain_name(NET, net("10.88.0.0/16"));
        let c = masq_comment(NET);
        let jump = format!("POSTROUTING -s 10.88.0.0/16 -m comment --comment \"{c}\" -j {chain}");
        for (damage, batch, what) in [
            ("flushed", format!("-F {chain}"), "differs"),
            (
                "rule changed",
                format!("-R {chain} 3 -s 10.0.0.0/8 -m comment --comment \"{c}\" -j MASQUERADE"),
                "differs",
            ),
            ("jump gone", format!("-D {jump}"), "no POSTROUTING jump"),
            (
                "chain gone",
                format!("-D {jump}\n-F {chain}\n-X {chain}"),
                "missing",
            ),
        ] {
            run_restore(&ns, &tools.v4_restore, &format!("*nat\n{batch}\nCOMMIT\n"));
            let e = masquerade_check(&nf, NET, &addr).unwrap_err();
            assert!(
                matches!(&e, Error::Check(m) if m.contains(what) && m.contains(&chain)),
                "{backend}, {damage}: {e}"
            );
            masquerade_ensure(&nf, NET, &addr, false).unwrap();
            masquerade_check(&nf, NET, &addr).unwrap();
            assert_eq!(snapshot_all(&ns, &tools), good, "{backend}, {damage}");
        }
        // Duplicate and stray jumps do no harm: CHECK passes and ADD, whose checks pass, leaves
        // them. The next repair removes them with the damage.
        run_restore(
            &ns,
            &tools.v4_restore,
            &format!("*nat\n-A {jump}\n-I POSTROUTING -s 10.0.0.0/8 -j {chain}\nCOMMIT\n"),
        );
        let with_strays = snapshot_all(&ns, &tools);
        masquerade_check(&nf, NET, &addr).unwrap();
        masquerade_ensure(&nf, NET, &addr, false).unwrap();
        assert_eq!(snapshot_all(&ns, &tools), with_strays, "{backend}: left");
        run_restore(
            &ns,
            &tools.v4_restore,
            &format!("*nat\n-F {chain}\nCOMMIT\n"),
        );
        masquerade_ensure(&nf, NET, &addr, false).unwrap();
        assert_eq!(snapshot_all(&ns, &tools), good, "{backend}: tidied");
    }
}

#[test]
fn one_chain_per_subnet_and_family_and_network() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        let addrs = [
            net("10.88.0.7/16"),
            net("10.99.0.7/24"),
            net("fd00::7/64"),
            net("fd01::7/64"),
        ];
        masquerade_ensure(&nf, NET, &addrs, false).unwrap();
        masquerade_check(&nf, NET, &addrs).unwrap();
        let v6 = snapshot(&ns, &tools, Family::V6);
        for subnet in ["fd00::/64", "fd01::/64"] {
            let chain = masq_chain_name(NET, net(subnet));
            assert!(v6.contains(&format!("-A {chain} -d {subnet} ")), "{v6}");
            assert!(v6.contains(&format!("-A {chain} -d ff00::/8 ")), "{v6}");
            assert_eq!(
                v6.matches(&format!("-s {subnet} ")).count(),
                1,
                "{backend}:\n{v6}"
            );
        }
        for family in Family::ALL {
            let lines = masq_lines(&ns, &tools, family);
            assert_eq!(
                lines.iter().filter(|l| l.starts_with(':')).count(),
                2,
                "{backend}"
            );
            assert_eq!(lines.len(), 2 * 5, "{backend}: {lines:#?}");
        }
        // The same subnet on another network is another chain; only one family: the other
        // family's table is not touched.
        let v6_before = snapshot(&ns, &tools, Family::V6);
        assert!(masquerade_check(&nf, "othernet", &addrs[..1]).is_err());
        masquerade_ensure(&nf, "othernet", &addrs[..1], false).unwrap();
        masquerade_check(&nf, "othernet", &addrs[..1]).unwrap();
        assert_eq!(snapshot(&ns, &tools, Family::V6), v6_before, "{backend}");
        assert_eq!(
            masq_lines(&ns, &tools, Family::V4).len(),
            3 * 5,
            "{backend}"
        );
        // A subnet of the network that was never set up fails CHECK.
        assert!(masquerade_check(&nf, NET, &[net("10.100.0.2/24")]).is_err());
    }
}

/// 20 ADDs at once on a fresh table (all told the network is new, none told, half told): exactly
/// one chain and one jump per family, as the creations take turns under the lock and only the
/// first one's `-N` commits (`masquerade_lock.rs` checks the lock itself, as this race is too
/// narrow to hit every run); then the same after both jumps were lost, which the ADDs whose
/// checks fail repair under the lock.
#[test]
fn twenty_parallel_adds_write_exactly_one_jump() {
    for (backend, tools) in backends() {
        for hint in ["all", "none", "half"] {
            let ns = ns();
            let nf = nf(&ns, &tools);
            let addrs = |i: usize| {
                [
                    net(&format!("10.88.1.{}/16", i + 2)),
                    net(&format!("fd00::{:x}/64", i + 2)),
                ]
            };
            let twenty = || {
                std::thread::scope(|s| {
                    for i in 0..20 {
                        let nf = &nf;
                        let likely_new = hint == "all" || (hint == "half" && i % 2 == 0);
                        s.spawn(move || {
                            masquerade_ensure(nf, NET, &addrs(i), likely_new)
                                .unwrap_or_else(|e| panic!("{backend}: add {i}: {e}"));
                        });
                    }
                })
            };
            let one_each = |what: &str| {
                for family in Family::ALL {
                    let lines = masq_lines(&ns, &tools, family);
                    let jumps = lines
                        .iter()
                        .filter(|l| l.starts_with("-A POSTROUTING"))
                        .count();
                    let at = format!("{backend}, hint {hint}, {family:?}, {what}");
                    assert_eq!(jumps, 1, "{at}: {lines:#?}");
                    assert_eq!(lines.len(), 5, "{at}: {lines:#?}");
                }
            };
            twenty();
            one_each("created");
            for i in 0..20 {
                masquerade_check(&nf, NET, &addrs(i)).unwrap();
            }
            if hint != "half" {
                continue;
            }
            // Both jumps lost: the ADDs checking before the first repair commits see one to make.
            let c = masq_comment(NET);
            for (restore, subnet) in [
                (&tools.v4_restore, "10.88.0.0/16"),
                (&tools.v6_restore, "fd00::/64"),
            ] {
                let chain = masq_chain_name(NET, net(subnet));
                run_restore(
                    &ns,
                    restore,
                    &format!(
                        "*nat\n-D POSTROUTING -s {subnet} -m comment --comment \"{c}\" -j {chain}\nCOMMIT\n"
                    ),
                );
            }
            assert!(masquerade_check(&nf, NET, &addrs(0)).is_err());
            twenty();
            one_each("repaired");
        }
    }
}

#[test]
fn invalid_names_are_rejected_before_anything_runs() {
    let ns = ns();
    let tools = Tools::nft();
    let nf = nf(&ns, &tools);
    let before = snapshot_all(&ns, &tools);
    let a = [net("10.88.0.2/16")];
    for n in ["bad net", "n\"; -F", "n\n-F", "", &"n".repeat(250)] {
        for r in [
            masquerade_ensure(&nf, n, &a, false),
            masquerade_check(&nf, n, &a),
        ] {
            assert!(matches!(r, Err(Error::Invalid { .. })), "{n:?}: {r:?}");
        }
    }
    assert_eq!(snapshot_all(&ns, &tools), before);
    // No addresses: nothing to do, nothing run.
    let nothing = Tools {
        v4_save: "/nonexistent".into(),
        v6_save: "/nonexistent".into(),
        ..tools.clone()
    };
    let blind = common::nf(&ns, &nothing);
    masquerade_ensure(&blind, NET, &[], false).unwrap();
    masquerade_check(&blind, NET, &[]).unwrap();
}
