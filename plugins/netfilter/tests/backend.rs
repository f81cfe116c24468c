//! The [`Firewall`] seam against the real kernel: the iptables backend's network-level
//! masquerade lifecycle, ensure → check → remove, on both iptables backends.

mod common;

use common::*;
use tether_netfilter::{Firewall, Iptables, masq_chain_name};

#[test]
fn masquerade_remove_takes_the_networks_chains_and_jumps_and_nothing_else() {
    for (backend, tools) in backends() {
        let ns = ns();
        let fw = Iptables::new(nf(&ns, &tools));
        assert_eq!(fw.name(), "iptables");
        foreign_rules(&ns, &tools);
        let before = snapshot_all(&ns, &tools);
        let addrs = [net("10.88.0.2/16"), net("10.99.0.2/24"), net("fd88::2/64")];
        fw.masquerade_ensure("net-a", &addrs, false).unwrap();
        fw.masquerade_check("net-a", &addrs).unwrap();
        // Another network's chain, which must stay.
        fw.masquerade_ensure("net-b", &[net("10.77.0.2/16")], false)
            .unwrap();
        let a_chains: Vec<String> = ["10.88.0.0/16", "10.99.0.0/24", "fd88::/64"]
            .iter()
            .map(|s| masq_chain_name("net-a", net(s)))
            .collect();
        let with_b_only = {
            snapshot_all(&ns, &tools)
                .lines()
                .filter(|l| !a_chains.iter().any(|c| l.contains(c.as_str())))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        };
        assert_eq!(
            fw.masquerade_networks().unwrap(),
            ["net-a", "net-b"].map(String::from).into(),
            "{backend}"
        );
        // All three of net-a's chains, both families, whatever subnets it had.
        assert_eq!(fw.masquerade_remove("net-a").unwrap(), 3, "{backend}");
        assert_eq!(snapshot_all(&ns, &tools), with_b_only, "{backend}");
        assert!(fw.masquerade_check("net-a", &addrs).is_err(), "{backend}");
        fw.masquerade_check("net-b", &[net("10.77.0.2/16")])
            .unwrap();
        // Idempotent: nothing there is success.
        assert_eq!(fw.masquerade_remove("net-a").unwrap(), 0, "{backend}");
        assert_eq!(fw.masquerade_remove("net-b").unwrap(), 1, "{backend}");
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");
    }
}
