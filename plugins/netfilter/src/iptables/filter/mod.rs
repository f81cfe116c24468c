//! Filtering (the firewall plugin) on iptables: the layout in [`rules`], applied with one
//! `iptables-save` and at most one `iptables-restore` per family.

pub mod rules;

use std::net::IpAddr;

use crate::policy::{AttachmentId, FilterPolicy};
use crate::{Batch, Error, Family, Netfilter, OnSaveError, Result, SavedTable, Table, lock};
use crate::{per_family, sweep as nf_sweep};

/// [`crate::sweep`] over the filter table.
fn sweep(
    nf: &Netfilter,
    family: Family,
    on_save_error: OnSaveError,
    mut plan: impl FnMut(&SavedTable) -> Result<Batch>,
) -> Result<()> {
    nf_sweep(nf, family, &[Table::Filter], on_save_error, |t| {
        Ok((plan(t.table(Table::Filter))?, ()))
    })
    .map_err(Error::from)
}

fn first_err(results: Vec<Result<()>>) -> Result<()> {
    results.into_iter().collect()
}

/// `f` on each family of `ips` at once, with that family's addresses; the families and their
/// results, in order.
fn per_ip_family(
    ips: &[IpAddr],
    f: impl Fn(Family, &[IpAddr]) -> Result<()> + Sync,
) -> (Vec<Family>, Vec<Result<()>>) {
    let grouped = by_family(ips);
    let fams: Vec<Family> = grouped.iter().map(|(f, _)| *f).collect();
    let results = per_family(&fams, |family| {
        let ips = &grouped
            .iter()
            .find(|(f, _)| *f == family)
            .expect("family from the list")
            .1;
        f(family, ips)
    });
    (fams, results)
}

/// `ips` by family, in family order.
fn by_family(ips: &[IpAddr]) -> Vec<(Family, Vec<IpAddr>)> {
    Family::ALL
        .into_iter()
        .map(|f| {
            let of: Vec<IpAddr> = ips
                .iter()
                .copied()
                .filter(|ip| Family::from(*ip) == f)
                .collect();
            (f, of)
        })
        .filter(|(_, of)| !of.is_empty())
        .collect()
}

/// Deletes the per-address rules `select` picks (by comment), plus the reference's uncommented
/// rules for `known` addresses. Reads the table once; runs nothing when there is nothing to do.
fn remove(
    nf: &Netfilter,
    family: Family,
    select: &(impl Fn(&str, &str, &str) -> bool + Sync),
    known: &[IpAddr],
) -> Result<()> {
    let known: Vec<IpAddr> = known
        .iter()
        .copied()
        .filter(|ip| Family::from(*ip) == family)
        .collect();
    sweep(nf, family, OnSaveError::SkipV6, |t| {
        let mut b = Batch::new(family);
        for r in rules::attachment_rules(t, select).chain(rules::reference_rules(t, &known)) {
            b.delete_saved(Table::Filter, r);
        }
        Ok(b)
    })
}

/// [`crate::Firewall::filter_add`].
pub fn add(
    nf: &Netfilter,
    who: &AttachmentId<'_>,
    ips: &[IpAddr],
    policy: &FilterPolicy,
) -> Result<()> {
    let text = who.comment();
    let is_mine = |_: &str, cid: &str, ifname: &str| who.same_interface(cid, ifname);
    let _guard = lock::netfilter_lock();
    let (fams, results) = per_ip_family(ips, |family, ips| {
        sweep(nf, family, OnSaveError::Fail, |t| {
            let mut b = Batch::new(family);
            rules::plan_add(
                &mut b,
                policy,
                t,
                &text,
                is_mine,
                ips,
                policy.bridge.as_deref(),
            )?;
            Ok(b)
        })
    });
    if let Err(e) = first_err(results) {
        // All or nothing for the per-address rules; the shared chains stay (as always).
        let undo = per_family(&fams, |family| remove(nf, family, &is_mine, &[]));
        if let Err(u) = first_err(undo) {
            tracing::warn!(error = %u, "rolling back firewall rules failed");
        }
        return Err(e);
    }
    Ok(())
}

/// [`crate::Firewall::filter_check`]: one `iptables-save` of the filter table per family.
pub fn check(
    nf: &Netfilter,
    who: &AttachmentId<'_>,
    ips: &[IpAddr],
    policy: &FilterPolicy,
) -> Result<()> {
    let text = who.comment();
    first_err(
        per_ip_family(ips, |family, ips| {
            let t = SavedTable::parse(&nf.save(family, Table::Filter)?, Table::Filter);
            rules::check(policy, &t, &text, ips, policy.bridge.as_deref())
                .map_err(|msg| Error::Check(format!("({family:?}): {msg}")))
        })
        .1,
    )
}

/// [`crate::Firewall::filter_delete`].
pub fn delete(nf: &Netfilter, who: &AttachmentId<'_>, known: &[IpAddr]) -> Result<()> {
    let is_mine = |_: &str, cid: &str, ifname: &str| who.same_interface(cid, ifname);
    let _guard = lock::netfilter_lock();
    first_err(per_family(&Family::ALL, |family| {
        remove(nf, family, &is_mine, known)
    }))
}

/// [`crate::Firewall::filter_gc`].
pub fn gc(nf: &Netfilter, network: &str, valid: &[AttachmentId<'_>]) -> Result<()> {
    let is_stale = |net: &str, cid: &str, ifname: &str| {
        net == network && !valid.iter().any(|a| a.same_interface(cid, ifname))
    };
    let _guard = lock::netfilter_lock();
    first_err(per_family(&Family::ALL, |family| {
        remove(nf, family, &is_stale, &[])
    }))
}
