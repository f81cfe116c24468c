//! Removing a network's masquerade state (see the masq module for its layout): the bridge's
//! last DEL, its GC, and the sweep of networks that vanished call these.
//!
//! ```text
//! nat, per family:
//!   -A POSTROUTING -s S -m comment --comment "tether net=<net> masq" -j TETHER-MASQ-<hash>   -D
//!   :TETHER-MASQ-<hash>  (rules commented "tether net=<net> masq")                          -F, -X
//! ```
//!
//! A network's chains are found by the comment on their rules, not by recomputing names from
//! subnets: a network whose subnets changed between ADDs (or a DEL that knows no subnets at all)
//! still finds every chain it left. Jumps are found by their target, so a jump without our
//! comment (added by hand) does not keep the chain alive. Every removal is planned from a save
//! and applied under [`lock::netfilter_lock`] (a concurrent `masquerade_ensure` creating the
//! same chain plans under it too), and re-planned when another tool changed the table meanwhile
//! ([`sweep`]). Removing what is not there is success, so both calls are idempotent.
//!
//! Deciding *whether* a network may lose its chains (no container of it is left) is the
//! caller's job, under its own lock: these functions remove unconditionally.

use std::collections::BTreeSet;

use crate::masq::{MASQ_CHAIN_PREFIX, masq_comment};
use crate::{
    Batch, Family, Netfilter, OnSaveError, Result, SavedTable, Table, lock, per_family, sweep,
    validate,
};

const POSTROUTING: &str = "POSTROUTING";

/// Removes every masquerade chain of `network` and every jump to them, in both families (an
/// IPv6 table that cannot be read holds nothing of ours). Returns how many chains went.
pub fn masquerade_remove(nf: &Netfilter, network: &str) -> Result<usize> {
    validate::name_field("network name", network)?;
    let text = masq_comment(network);
    let _lock = lock::netfilter_lock();
    let removed = per_family(&Family::ALL, |family| {
        sweep(nf, family, &[Table::Nat], OnSaveError::SkipV6, |saved| {
            Ok::<_, crate::Error>(removal(family, saved.table(Table::Nat), &text))
        })
        .map_err(crate::Error::from)
    });
    let mut n = 0;
    for r in removed {
        n += r?;
    }
    if n > 0 {
        tracing::debug!(network, chains = n, "masquerading removed");
    }
    Ok(n)
}

/// The networks that own at least one masquerade chain (by the comment on its rules), in both
/// families: what a sweep for vanished networks starts from.
pub fn masquerade_networks(nf: &Netfilter) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for (i, family) in Family::ALL.into_iter().enumerate() {
        let saved = match nf.save(family, Table::Nat) {
            Ok(s) => s,
            // As in the removal: an unreadable IPv6 table holds nothing of ours.
            Err(e) if i > 0 => {
                tracing::debug!(error = %e, "IPv6 nat table unreadable");
                continue;
            }
            Err(e) => return Err(e),
        };
        out.extend(networks_in(&SavedTable::parse(&saved, Table::Nat)));
    }
    Ok(out)
}

/// The masquerade chains of the network whose comment is `text`.
fn chains_of(saved: &SavedTable, text: &str) -> BTreeSet<String> {
    saved
        .rules
        .iter()
        .filter(|r| r.chain.starts_with(MASQ_CHAIN_PREFIX) && r.comment() == Some(text))
        .map(|r| r.chain.clone())
        .collect()
}

/// The batch removing the chains of `text` and the jumps to them, and how many chains.
fn removal(family: Family, saved: &SavedTable, text: &str) -> (Batch, usize) {
    let chains = chains_of(saved, text);
    let mut b = Batch::new(family);
    for r in saved
        .rules
        .iter()
        .filter(|r| r.chain == POSTROUTING && r.target().is_some_and(|t| chains.contains(t)))
    {
        b.delete_saved(Table::Nat, r);
    }
    for chain in &chains {
        // Names come from the kernel's own dump and passed our prefix: valid chain names.
        b.flush_chain(Table::Nat, chain)
            .and_then(|b| b.delete_chain(Table::Nat, chain))
            .expect("a chain name iptables-save printed");
    }
    (b, chains.len())
}

/// Network names out of masquerade comments (`tether net=<name> masq`).
fn networks_in(saved: &SavedTable) -> BTreeSet<String> {
    saved
        .rules
        .iter()
        .filter(|r| r.chain.starts_with(MASQ_CHAIN_PREFIX))
        .filter_map(|r| {
            r.comment()?
                .strip_prefix("tether net=")?
                .strip_suffix(" masq")
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masq_chain_name;

    fn nat(rules: &str) -> SavedTable {
        SavedTable::parse(
            &format!("*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n{rules}COMMIT\n"),
            Table::Nat,
        )
    }

    fn chain(net: &str, subnet: &str) -> (String, String) {
        let c = masq_chain_name(net, subnet.parse().unwrap());
        let t = masq_comment(net);
        let rules = format!(
            ":{c} - [0:0]\n\
             -A POSTROUTING -s {subnet} -m comment --comment \"{t}\" -j {c}\n\
             -A {c} -d {subnet} -m comment --comment \"{t}\" -j RETURN\n\
             -A {c} -m comment --comment \"{t}\" -j MASQUERADE\n"
        );
        (c, rules)
    }

    #[test]
    fn removes_every_chain_of_the_network_and_only_those() {
        let (a1, r1) = chain("a", "10.1.0.0/24");
        let (a2, r2) = chain("a", "10.2.0.0/24");
        let (b1, r3) = chain("b", "10.3.0.0/24");
        let stray = format!("-A POSTROUTING -s 10.9.0.0/24 -j {a1}\n");
        let saved = nat(&format!("{r1}{r2}{r3}{stray}"));
        let (batch, n) = removal(Family::V4, &saved, &masq_comment("a"));
        assert_eq!(n, 2);
        let text = batch.text();
        assert_eq!(text.matches("-D POSTROUTING").count(), 3, "{text}");
        for c in [&a1, &a2] {
            assert!(text.contains(&format!("-F {c}\n-X {c}\n")), "{text}");
        }
        assert!(!text.contains(&b1), "{text}");
        // The jumps go before the chains they reference.
        assert!(text.rfind("-D POSTROUTING").unwrap() < text.find("-F ").unwrap());
        assert_eq!(
            networks_in(&saved),
            BTreeSet::from(["a".to_string(), "b".to_string()])
        );
        let (nothing, n) = removal(Family::V4, &nat(&r3), &masq_comment("a"));
        assert!(nothing.is_empty() && n == 0);
    }
}
