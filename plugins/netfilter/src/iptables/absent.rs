//! Knowing, without running a program, that iptables holds nothing of ours (nor of the
//! reference plugins'), so that DEL and GC on the nftables backend can skip the iptables half
//! of their cleanup (four `iptables`/`-save` execs, ~6 ms) on hosts that never used it.
//!
//! ```text
//!   legacy xtables:  /proc/thread-self/net/ip{,6}_tables_names   (tables this netns has)
//!                    empty ──┐                      any name ──> unsure: clean up
//!   iptables-nft:    nf_tables tables ip|ip6 {nat,filter,raw,mangle}: their chains
//!                    none named TETHER-* or CNI-* ──> absent: skip
//! ```
//!
//! Every rule either backend (or the reference) writes is in, or jumps to, a chain named
//! `TETHER-*` or `CNI-*`, and iptables cannot jump to a chain that does not exist: no such
//! chain means no such rule. Any doubt (another namespace, a read that fails) answers
//! "unsure", which keeps the full cleanup.

use tether_nft::{Family as NftFamily, Nft, Table};

const LEGACY_TABLE_LISTS: [&str; 2] = [
    "/proc/thread-self/net/ip_tables_names",
    "/proc/thread-self/net/ip6_tables_names",
];
const TABLES: [&str; 4] = ["nat", "filter", "raw", "mangle"];
const PREFIXES: [&str; 2] = ["TETHER-", "CNI-"];

/// True only when iptables surely holds no chain of ours or the reference's in the
/// namespace this process is in.
pub(crate) fn surely_absent() -> bool {
    let legacy_in_use = LEGACY_TABLE_LISTS
        .iter()
        .any(|p| match std::fs::read_to_string(p) {
            Ok(s) => !s.trim().is_empty(),
            // No legacy xtables in this kernel at all.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(_) => true,
        });
    if legacy_in_use {
        return false;
    }
    let Ok(mut nft) = Nft::current() else {
        return false;
    };
    for family in [NftFamily::Ip, NftFamily::Ip6] {
        for name in TABLES {
            let Ok(t) = Table::new(family, name) else {
                return false;
            };
            match nft.chains(&t) {
                Ok(chains) => {
                    if chains
                        .iter()
                        .any(|c| PREFIXES.iter().any(|p| c.name.starts_with(p)))
                    {
                        return false;
                    }
                }
                Err(tether_nft::Error::NotFound { .. }) => {}
                Err(_) => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use netns_fixtures::Netns;

    use super::surely_absent;

    #[test]
    fn absent_on_a_fresh_host_and_not_once_iptables_holds_a_chain_of_ours_or_is_legacy() {
        let fresh = Netns::new().unwrap();
        assert!(fresh.run(surely_absent), "a fresh namespace holds nothing");
        // Another program's chain is not ours.
        fresh.sh("iptables-nft", &["-t", "filter", "-N", "DOCKER-USER"]);
        assert!(fresh.run(surely_absent), "a foreign chain is not ours");
        for (prog, table, chain) in [
            ("iptables-nft", "nat", "CNI-HOSTPORT-DNAT"),
            ("ip6tables-nft", "filter", "TETHER-X"),
            ("iptables-nft", "raw", "TETHER-LOCALNET-GUARD"),
        ] {
            let ns = Netns::new().unwrap();
            ns.sh(prog, &["-t", table, "-N", chain]);
            assert!(!ns.run(surely_absent), "{prog} -t {table} {chain}");
        }
        // Legacy xtables in use: their chains cannot be read without a program, so unsure.
        let legacy = Netns::new().unwrap();
        legacy.sh("iptables-legacy", &["-t", "nat", "-S"]);
        assert!(!legacy.run(surely_absent), "legacy tables in use");
    }
}
