//! Removing a network's masquerade state (masquerade_remove, masquerade_networks) against the
//! real kernel, in throwaway namespaces, on both iptables backends.

mod common;

use std::collections::BTreeSet;

use common::*;
use tether_netfilter::{masquerade_ensure, masquerade_networks, masquerade_remove};

#[test]
fn removing_a_network_takes_all_its_chains_and_jumps_in_both_families_and_nothing_else() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        foreign_rules(&ns, &tools);
        let before = snapshot_all(&ns, &tools);
        // "b" alone, as it will be after "a" is removed.
        masquerade_ensure(&nf, "b", &[net("10.3.0.2/24")], false).unwrap();
        let only_b = snapshot_all(&ns, &tools);
        // Network "a" with two v4 subnets (its config changed between ADDs) and a v6 one.
        for addrs in [
            &[net("10.1.0.2/24"), net("fd01::2/64")][..],
            &[net("10.2.0.2/24")][..],
        ] {
            masquerade_ensure(&nf, "a", addrs, false).unwrap();
        }
        assert_eq!(
            masquerade_networks(&nf).unwrap(),
            BTreeSet::from(["a".to_string(), "b".to_string()]),
            "{backend}"
        );

        assert_eq!(masquerade_remove(&nf, "a").unwrap(), 3, "{backend}");
        assert_eq!(snapshot_all(&ns, &tools), only_b, "{backend}");
        assert_eq!(
            masquerade_networks(&nf).unwrap(),
            BTreeSet::from(["b".to_string()]),
            "{backend}"
        );
        // Idempotent: nothing left to remove is success.
        assert_eq!(masquerade_remove(&nf, "a").unwrap(), 0, "{backend}");
        assert_eq!(masquerade_remove(&nf, "b").unwrap(), 1, "{backend}");
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
        assert!(masquerade_networks(&nf).unwrap().is_empty(), "{backend}");
        // A network that comes back gets its chains again.
        masquerade_ensure(&nf, "a", &[net("10.1.0.2/24")], true).unwrap();
        assert_eq!(masquerade_remove(&nf, "a").unwrap(), 1, "{backend}");
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
    }
}

#[test]
fn a_removal_racing_ensures_of_other_networks_keeps_theirs() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        masquerade_ensure(&nf, "gone", &[net("10.9.0.2/24"), net("fd09::2/64")], true).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| masquerade_remove(&nf, "gone").unwrap());
            for i in 0..4 {
                let nf = &nf;
                s.spawn(move || {
                    let n = format!("n{i}");
                    let a = [
                        net(&format!("10.{i}.0.2/24")),
                        net(&format!("fd0{i}::2/64")),
                    ];
                    masquerade_ensure(nf, &n, &a, true).unwrap();
                });
            }
        });
        let want: BTreeSet<String> = (0..4).map(|i| format!("n{i}")).collect();
        assert_eq!(masquerade_networks(&nf).unwrap(), want, "{backend}");
        for i in 0..4 {
            let n = format!("n{i}");
            let a = [
                net(&format!("10.{i}.0.2/24")),
                net(&format!("fd0{i}::2/64")),
            ];
            tether_netfilter::masquerade_check(&nf, &n, &a).unwrap();
        }
    }
}
