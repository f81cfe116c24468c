//! Removing a network's masquerade state (the chains and jumps of [`crate::masq`]), for the
//! backend's [`crate::Firewall::masquerade_remove`] slot: the last DEL of a network, GC,
//! `tether network rm`.

use ipnetwork::IpNetwork;

use crate::{
    Batch, Error, Family, Netfilter, OnSaveError, Result, Table, lock, masq_chain_name, per_family,
    sweep, validate,
};

/// For every subnet (of either family) of `network`: drops each jump to its chain (whatever
/// chain it is in) and the chain itself, in one restore per family planned from one save,
/// under the netfilter lock so that no ensure of ours races it. Nothing there runs nothing.
pub fn remove(nf: &Netfilter, network: &str, subnets: &[IpNetwork]) -> Result<()> {
    validate::name_field("network name", network)?;
    let families: Vec<Family> = Family::ALL
        .into_iter()
        .filter(|f| subnets.iter().any(|s| Family::of(s) == *f))
        .collect();
    let _guard = lock::netfilter_lock();
    let results = per_family(&families, |family| {
        let mut chains: Vec<String> = subnets
            .iter()
            .filter(|s| Family::of(s) == family)
            .map(|s| masq_chain_name(network, *s))
            .collect();
        chains.dedup();
        sweep(nf, family, &[Table::Nat], OnSaveError::SkipV6, |saved| {
            let nat = saved.table(Table::Nat);
            let mut b = Batch::new(family);
            for rule in nat
                .rules
                .iter()
                .filter(|r| r.target().is_some_and(|t| chains.iter().any(|c| c == t)))
            {
                b.delete_saved(Table::Nat, rule);
            }
            for chain in chains.iter().filter(|c| nat.has_chain(c)) {
                b.flush_chain(Table::Nat, chain)?
                    .delete_chain(Table::Nat, chain)?;
            }
            Ok::<_, Error>((b, ()))
        })
        .map_err(Error::from)
    });
    results.into_iter().collect()
}
