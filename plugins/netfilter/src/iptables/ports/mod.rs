//! Port publishing (portmap) on iptables: the layout, and the add/check/delete/gc of an
//! attachment over it. The layout is pure functions from saved tables to batches, split into
//! `base` (shared chains), `attachment` (one attachment's rules, for ADD and CHECK alike)
//! and `readback` (who holds what, what a removal involves).
//!
//! The reference's layout with our names (per family, `nat` table unless noted):
//!
//! ```text
//! PREROUTING, OUTPUT:   -m addrtype --dst-type LOCAL -j TETHER-HOSTPORT-DNAT          (shared)
//! TETHER-HOSTPORT-DNAT: -p tcp -m multiport --dports 8080,8443 [conditions]
//!                       -m comment --comment "tether net=N id=C if=I" -j TETHER-DN-<hash>
//! TETHER-DN-<hash>:     -s <container subnet> -p tcp -m tcp --dport 8080 -j TETHER-HOSTPORT-SETMARK
//!                       -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j TETHER-HOSTPORT-SETMARK (v4)
//!                       -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80
//! TETHER-HOSTPORT-SETMARK: -j MARK --set-xmark 0x2000/0x2000                            (shared)
//! POSTROUTING (top):    -j TETHER-HOSTPORT-MASQ                                         (shared)
//! TETHER-HOSTPORT-MASQ: -m mark --mark 0x2000/0x2000 -j MASQUERADE                      (shared)
//! raw PREROUTING (top, v4): -j TETHER-LOCALNET-GUARD                                   (shared)
//! TETHER-LOCALNET-GUARD: -d 127.0.0.0/8 ! -i lo -j DROP                                (shared)
//! ```
//!
//! Every per-container rule (entry and chain rules) carries the attachment's comment, so DEL, GC
//! and the host-port conflict check find them by container id and interface alone: after a network
//! rename (new chain hash), without `portMappings`, without `prevResult`.
//!
//! The guard exists because `route_localnet=1` (needed so `127.0.0.1:PORT` can be DNAT-ed to a
//! container) and the DNAT itself both run before the kernel's martian checks: without it a
//! neighbour on the LAN could send to `127.0.0.1:PORT` and reach ports published only on
//! localhost. It sits in `raw`, before conntrack and NAT, where the destination is still the one
//! the sender wrote. Locally generated traffic to 127.0.0.0/8 comes in on `lo` and is unaffected;
//! replies to our masqueraded localhost connections are addressed to the bridge address there.
//! IPv6 needs no guard: the kernel drops `::1` arriving on any interface other than `lo` before
//! netfilter sees it (and so localhost publishing does not work over IPv6).

mod attachment;
mod base;
mod readback;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::policy::{AttachmentId, MarkChain, PortPolicy, Published};
use crate::{
    Batch, Error, Family, Netfilter, OnSaveError, Result, SavedTable, SavedTables, Table,
    chain_name, lock, per_family,
};

pub use attachment::{add_attachment, check_attachment};
pub use base::{check_base, create_base, ensure_base};
pub use readback::{
    Entry, Removal, conflict, entries, entries_allow_add, published, removal, removal_from_entries,
};

pub const DNAT_CHAIN: &str = "TETHER-HOSTPORT-DNAT";
pub const SETMARK_CHAIN: &str = "TETHER-HOSTPORT-SETMARK";
pub const MASQ_CHAIN: &str = "TETHER-HOSTPORT-MASQ";
pub const GUARD_CHAIN: &str = "TETHER-LOCALNET-GUARD";
/// Per-attachment DNAT chains: this prefix + hash(network, container id, ifname).
pub const DN_PREFIX: &str = "TETHER-DN-";

const DNAT_JUMP_COMMENT: &str = "tether hostport DNAT";
const SETMARK_COMMENT: &str = "tether portfwd masquerade mark";
const MASQ_JUMP_COMMENT: &str = "tether portfwd requiring masquerade";
const GUARD_COMMENT: &str = "tether route_localnet guard: drop 127.0.0.0/8 not from lo";
/// `multiport` takes at most 15 ports per rule.
const MULTIPORT_MAX: usize = 15;

/// The attachment's `TETHER-DN-<hash>` chain. Never change it: DEL must find older chains.
pub fn dn_chain(who: &AttachmentId<'_>) -> String {
    chain_name(DN_PREFIX, who.network, who.container_id, who.ifname)
}

fn mark_value(bit: u32) -> String {
    let v = 1u32 << bit;
    format!("{v:#x}/{v:#x}")
}

fn host(ip: IpAddr) -> IpNetwork {
    IpNetwork::new(ip, Family::from(ip).host_prefix()).expect("host prefix is valid")
}

fn subnet(n: &IpNetwork) -> IpNetwork {
    IpNetwork::new(n.network(), n.prefix()).expect("prefix came from a valid network")
}

/// The first address of each family present.
fn first_per_family(addrs: &[IpNetwork]) -> Vec<IpNetwork> {
    let mut out: Vec<IpNetwork> = Vec::new();
    for a in addrs {
        if !out.iter().any(|o| Family::of(o) == Family::of(a)) {
            out.push(*a);
        }
    }
    out.sort_by_key(Family::of);
    out
}

/// `f` on the first address of each family at once; the families and their results, in order.
fn per_address<T: Send>(
    addrs: &[IpNetwork],
    f: impl Fn(Family, &IpNetwork) -> T + Sync,
) -> (Vec<Family>, Vec<T>) {
    let addrs = first_per_family(addrs);
    let fams: Vec<Family> = addrs.iter().map(Family::of).collect();
    let results = per_family(&fams, |family| {
        let addr = addrs
            .iter()
            .find(|a| Family::of(a) == family)
            .expect("a family comes from an address");
        f(family, addr)
    });
    (fams, results)
}

/// The tables a plan reads: `nat`, plus `raw` for IPv4 when asked (the `route_localnet` guard).
fn tables(family: Family, with_raw: bool) -> &'static [Table] {
    if with_raw && family == Family::V4 {
        &[Table::Nat, Table::Raw]
    } else {
        &[Table::Nat]
    }
}

fn sweep<T: Default>(
    nf: &Netfilter,
    family: Family,
    with_raw: bool,
    on_save_error: OnSaveError,
    plan: impl FnMut(&SavedTables) -> Result<(Batch, T)>,
) -> Result<T> {
    crate::sweep(nf, family, tables(family, with_raw), on_save_error, plan).map_err(Error::from)
}

/// The entry rules of `TETHER-HOSTPORT-DNAT`, listed alone; `None` (after a debug event) when
/// the chain cannot be listed, most often because it does not exist yet.
fn list_entries(nf: &Netfilter, family: Family) -> Option<SavedTable> {
    nf.list_chain(family, Table::Nat, DNAT_CHAIN)
        .inspect_err(|e| tracing::debug!(?family, error = %e, "cannot list the DNAT chain"))
        .ok()
}

/// Applies a batch planned without a full read; `false` (after a debug event) when it failed,
/// which changed nothing and sends the caller to the full path.
fn try_apply(nf: &Netfilter, b: &Batch, what: &str) -> bool {
    b.apply(nf)
        .inspect_err(|e| tracing::debug!(error = %e, "{what} failed, reading the tables"))
        .is_ok()
}

/// DEL's fast path: the attachment's entry rules and the chains they jump to, found by listing
/// `TETHER-HOSTPORT-DNAT` alone instead of saving every table (whose cost grows with every
/// container published). `None` when the listing does not settle it or the batch failed.
fn remove_by_entries(
    nf: &Netfilter,
    family: Family,
    who: &AttachmentId<'_>,
) -> Option<Vec<Published>> {
    let dnat = list_entries(nf, family)?;
    let removal = removal_from_entries(&entries(&dnat), who)?;
    if removal.is_empty() {
        return Some(Vec::new());
    }
    let mut b = Batch::new(family);
    removal.add_to(&mut b).ok()?;
    // TCP only: nothing for the conntrack flush.
    try_apply(nf, &b, "removing by the entry rules").then(Vec::new)
}

/// Removes one attachment's rules in one family (by container id and ifname, any network name).
/// Returns what its rules published.
fn remove(nf: &Netfilter, family: Family, who: &AttachmentId<'_>) -> Result<Vec<Published>> {
    if let Some(published) = remove_by_entries(nf, family, who) {
        return Ok(published);
    }
    let extra = [dn_chain(who)];
    sweep(nf, family, false, OnSaveError::SkipV6, |t| {
        let r = removal(
            t.table(Table::Nat),
            family,
            |_, cid, ifname| who.same_interface(cid, ifname),
            &extra,
        );
        let mut b = Batch::new(family);
        r.add_to(&mut b)?;
        Ok((b, r.published))
    })
}

/// ADD's fast path, without saving every table (whose cost grows with every container
/// published): list `TETHER-HOSTPORT-DNAT` alone, and when its entry rules show no conflict and
/// nothing of this attachment, write the attachment's rules in one batch that starts with `-C`
/// checks of the shared base, so it commits only if the base is complete. A host without the
/// chain gets the whole base created with `-N`, which fails if any of it exists. `false` when
/// the full path must decide; nothing was changed then.
fn add_by_entries(
    nf: &Netfilter,
    cfg: &PortPolicy,
    who: &AttachmentId<'_>,
    addr: &IpNetwork,
) -> bool {
    let family = Family::of(addr);
    let mut b = Batch::new(family);
    let base = match list_entries(nf, family) {
        Some(dnat) => {
            if !entries_allow_add(&entries(&dnat), cfg, who, family) {
                return false;
            }
            check_base(&mut b, cfg, family)
        }
        // With an external mark chain that is missing, the nat section would fail after the raw
        // section committed the guard: the full path refuses that config before writing.
        None if cfg.snat && matches!(cfg.mark, MarkChain::External(_)) => return false,
        None => create_base(&mut b, cfg, family),
    };
    if base
        .and_then(|()| add_attachment(&mut b, cfg, who, addr))
        .is_err()
    {
        // The full path reports it.
        return false;
    }
    try_apply(nf, &b, "adding by the entry rules")
}

fn add_family(
    nf: &Netfilter,
    cfg: &PortPolicy,
    who: &AttachmentId<'_>,
    addr: &IpNetwork,
) -> Result<()> {
    if add_by_entries(nf, cfg, who, addr) {
        return Ok(());
    }
    let family = Family::of(addr);
    let own_chain = dn_chain(who);
    sweep(nf, family, true, OnSaveError::Fail, |t| {
        let nat = t.table(Table::Nat);
        let existing = published(nat, family);
        if let Some((m, holder)) = conflict(cfg, who, family, &existing) {
            return Err(Error::Conflict(format!(
                "host port {}/{} on {} is already published by container {} (interface {}, \
                 network {}){}",
                m.host_port,
                m.proto.as_str(),
                m.host_ip,
                holder.container_id,
                holder.ifname,
                holder.network,
                holder
                    .to
                    .map(|ip| format!(", forwarded to {ip}"))
                    .unwrap_or_default()
            )));
        }
        if let MarkChain::External(chain) = &cfg.mark
            && cfg.snat
            && !nat.has_chain(chain)
        {
            return Err(Error::Invalid {
                what: "externalSetMarkChain",
                value: chain.clone(),
                reason: format!("does not exist in the {family:?} nat table"),
            });
        }
        let mut b = Batch::new(family);
        // A repeated ADD, or one after the network was renamed: replace what this attachment
        // had. Our own chain is kept (re-declaring it below flushes it).
        let mut old = removal(
            nat,
            family,
            |_, cid, ifname| who.same_interface(cid, ifname),
            &[],
        );
        old.chains.remove(&own_chain);
        old.add_to(&mut b)?;
        ensure_base(&mut b, cfg, family, nat, t.get(Table::Raw))?;
        add_attachment(&mut b, cfg, who, addr)?;
        Ok((b, ()))
    })
}

/// [`crate::Firewall::publish_add`]: every family at once, under the netfilter lock; a failure
/// in one undoes all (including a half-done one).
pub fn add(
    nf: &Netfilter,
    who: &AttachmentId<'_>,
    addrs: &[IpNetwork],
    cfg: &PortPolicy,
) -> Result<()> {
    if cfg.mappings.is_empty() {
        return Ok(());
    }
    let _guard = lock::netfilter_lock();
    let (fams, results) = per_address(addrs, |_, addr| add_family(nf, cfg, who, addr));
    if let Some(e) = results.into_iter().find_map(Result::err) {
        for (family, undo) in fams.iter().zip(per_family(&fams, |f| remove(nf, f, who))) {
            if let Err(undo) = undo {
                tracing::warn!(error = %undo, ?family, "rolling back port mappings failed");
            }
        }
        return Err(e);
    }
    Ok(())
}

/// [`crate::Firewall::publish_delete`]: both families, under the netfilter lock.
pub fn delete(nf: &Netfilter, who: &AttachmentId<'_>) -> Result<Vec<Published>> {
    let _guard = lock::netfilter_lock();
    let mut gone = Vec::new();
    for res in per_family(&Family::ALL, |family| remove(nf, family, who)) {
        gone.extend(res?);
    }
    Ok(gone)
}

/// [`crate::Firewall::publish_check`]: one restore of `-C` lines per family, built by the same
/// functions as ADD's rules ([`check_base`], [`check_attachment`]); it changes nothing and
/// commits exactly when every rule is there.
pub fn check(
    nf: &Netfilter,
    who: &AttachmentId<'_>,
    addrs: &[IpNetwork],
    cfg: &PortPolicy,
) -> Result<()> {
    if cfg.mappings.is_empty() {
        return Ok(());
    }
    let (_, results) = per_address(addrs, |family, addr| {
        if cfg.mappings_for(family).next().is_none() {
            return Ok(());
        }
        let mut b = Batch::new(family);
        check_base(&mut b, cfg, family)?;
        check_attachment(&mut b, cfg, who, addr)?;
        b.apply(nf).map_err(|e| check_failure(family, e))
    });
    results.into_iter().collect()
}

/// A failed `-C` batch as a CHECK error naming the rule that is missing (or different).
fn check_failure(family: Family, e: Error) -> Error {
    let Some(line) = e.failed_input_line() else {
        return e;
    };
    let line = line.strip_prefix("-C ").unwrap_or(line);
    let chain = line.split_whitespace().next().unwrap_or_default();
    let what = if chain.starts_with(DN_PREFIX) {
        format!("a rule of the attachment's DNAT chain {chain}")
    } else if chain == DNAT_CHAIN {
        format!("an entry rule in {DNAT_CHAIN}")
    } else {
        format!("a shared rule in {chain}")
    };
    Error::Check(format!(
        "{family:?}: {what} is missing or different: {line}"
    ))
}

/// [`crate::Firewall::publish_gc`].
pub fn gc(nf: &Netfilter, network: &str, valid: &[AttachmentId<'_>]) -> Result<Vec<Published>> {
    let is_stale = |net: &str, cid: &str, ifname: &str| {
        net == network && !valid.iter().any(|a| a.same_interface(cid, ifname))
    };
    let _guard = lock::netfilter_lock();
    let results = per_family(&Family::ALL, |family| {
        sweep(nf, family, false, OnSaveError::SkipV6, |t| {
            let nat = t.table(Table::Nat);
            // Chains nobody jumps to and that hold no rules: left by an interrupted ADD of an
            // older version or by hand; nothing can be using them.
            let orphans: Vec<String> = nat
                .chains
                .iter()
                .filter(|c| c.starts_with(DN_PREFIX))
                .filter(|c| {
                    !nat.rules
                        .iter()
                        .any(|r| &r.chain == *c || r.target() == Some(c.as_str()))
                })
                .cloned()
                .collect();
            let r = removal(nat, family, is_stale, &orphans);
            let mut b = Batch::new(family);
            r.add_to(&mut b)?;
            Ok((b, r.published))
        })
    });
    let mut gone = Vec::new();
    for res in results {
        gone.extend(res?);
    }
    Ok(gone)
}
