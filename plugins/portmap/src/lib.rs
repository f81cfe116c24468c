//! `portmap`: publishes container ports on the host (chained after an interface plugin).
//!
//! Host ports from `runtimeConfig.portMappings` are DNAT-ed to the container addresses found in
//! `prevResult`, for traffic from other hosts, from the host itself, from `127.0.0.1` and from
//! containers (hairpin). See [`layout`] for the iptables layout and why it is safe.
//!
//! Beyond the reference plugin:
//! - two execs per family per call, and none for ADD/CHECK without mappings: ADD and DEL list
//!   `TETHER-HOSTPORT-DNAT` alone and write with one `iptables-restore` (see [`add_by_entries`]
//!   and [`remove_by_entries`]); what the entry rules do not settle reads the nat and raw
//!   tables with one `iptables-save`;
//! - a host port already published by another attachment is refused, naming the holder;
//! - DEL and GC find rules by the container id and interface in their comments, so they work
//!   without `portMappings`, without `prevResult` and after the network was renamed;
//! - stale UDP/SCTP conntrack entries are flushed on DEL too (the reference: ADD only);
//! - packets to 127.0.0.0/8 from off-host are dropped (the `route_localnet` guard).

mod config;
mod conntrack;
pub mod layout;
mod nl;

use std::collections::BTreeSet;
use std::net::IpAddr;

use cni::{Attachment, CniResult, Error, ErrorCode, Plugin, Request};
use ipnetwork::IpNetwork;
use tether_netfilter::lock::netfilter_lock;
use tether_netfilter::{
    Batch, Family, Netfilter, OnSaveError, SavedTable, SavedTables, SweepError, Table, per_family,
};

pub use config::{Config, HostIp, Mapping, MarkChain, Proto};
use layout::{Owner, Published};

pub struct Portmap;

// Netfilter failures get the plugin kit's codes (7 for a refused value, 999 for a failed run).
use tether_kit::nf as nf_err;

fn owner(req: &Request) -> Owner<'_> {
    Owner {
        network: &req.conf.name,
        container_id: &req.container_id,
        ifname: &req.ifname,
    }
}

fn families(addrs: &[IpNetwork]) -> Vec<Family> {
    let set: BTreeSet<Family> = addrs.iter().map(Family::of).collect();
    set.into_iter().collect()
}

/// The tables a plan reads: `nat`, plus `raw` for IPv4 when asked (the `route_localnet` guard).
fn tables(family: Family, with_raw: bool) -> &'static [Table] {
    if with_raw && family == Family::V4 {
        &[Table::Nat, Table::Raw]
    } else {
        &[Table::Nat]
    }
}

/// [`tether_netfilter::sweep`] with portmap's errors. DEL and GC pass [`OnSaveError::SkipV6`].
fn sweep<T: Default>(
    nf: &Netfilter,
    family: Family,
    with_raw: bool,
    on_save_error: OnSaveError,
    plan: impl FnMut(&SavedTables) -> Result<(Batch, T), Error>,
) -> Result<T, Error> {
    tether_netfilter::sweep(nf, family, tables(family, with_raw), on_save_error, plan).map_err(
        |e| match e {
            SweepError::Save(e) => nf_err("reading the iptables rules")(e),
            SweepError::Plan(e) => e,
            SweepError::Apply(e) => {
                Error::internal(format!("applying the port mapping rules: {e}"))
            }
        },
    )
}

/// The entry rules of `TETHER-HOSTPORT-DNAT`, listed alone; `None` (after a debug event) when
/// the chain cannot be listed, most often because it does not exist yet.
fn list_entries(nf: &Netfilter, family: Family) -> Option<SavedTable> {
    nf.list_chain(family, Table::Nat, layout::DNAT_CHAIN)
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
fn remove_by_entries(nf: &Netfilter, family: Family, who: &Owner<'_>) -> Option<Vec<Published>> {
    let dnat = list_entries(nf, family)?;
    let removal = layout::removal_from_entries(&layout::entries(&dnat), who)?;
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
fn remove(nf: &Netfilter, family: Family, who: &Owner<'_>) -> Result<Vec<Published>, Error> {
    if let Some(published) = remove_by_entries(nf, family, who) {
        return Ok(published);
    }
    let extra = [who.chain()];
    sweep(nf, family, false, OnSaveError::SkipV6, |t| {
        let r = layout::removal(
            t.table(Table::Nat),
            family,
            |_, cid, ifname| cid == who.container_id && ifname == who.ifname,
            &extra,
        );
        let mut b = Batch::new(family);
        r.add_to(&mut b).map_err(nf_err("removing port mappings"))?;
        Ok((b, r.published))
    })
}

/// ADD's fast path, without saving every table (whose cost grows with every container
/// published): list `TETHER-HOSTPORT-DNAT` alone, and when its entry rules show no conflict and
/// nothing of this attachment, write the attachment's rules in one batch that starts with `-C`
/// checks of the shared base, so it commits only if the base is complete. A host without the
/// chain gets the whole base created with `-N`, which fails if any of it exists. `false` when
/// the full path must decide; nothing was changed then.
fn add_by_entries(nf: &Netfilter, cfg: &Config, who: &Owner<'_>, addr: &IpNetwork) -> bool {
    let family = Family::of(addr);
    let mut b = Batch::new(family);
    let base = match list_entries(nf, family) {
        Some(dnat) => {
            if !layout::entries_allow_add(&layout::entries(&dnat), cfg, who, family) {
                return false;
            }
            layout::check_base(&mut b, cfg, family)
        }
        // With an external mark chain that is missing, the nat section would fail after the raw
        // section committed the guard: the full path refuses that config before writing.
        None if cfg.snat && matches!(cfg.mark, MarkChain::External(_)) => return false,
        None => layout::create_base(&mut b, cfg, family),
    };
    if base
        .and_then(|()| layout::add_attachment(&mut b, cfg, who, addr))
        .is_err()
    {
        // The full path reports it.
        return false;
    }
    try_apply(nf, &b, "adding by the entry rules")
}

fn add_family(
    nf: &Netfilter,
    cfg: &Config,
    who: &Owner<'_>,
    addr: &IpNetwork,
) -> Result<(), Error> {
    if add_by_entries(nf, cfg, who, addr) {
        return Ok(());
    }
    let family = Family::of(addr);
    let own_chain = who.chain();
    sweep(nf, family, true, OnSaveError::Fail, |t| {
        let nat = t.table(Table::Nat);
        let existing = layout::published(nat, family);
        if let Some((m, holder)) = layout::conflict(cfg, who, family, &existing) {
            return Err(Error::internal(format!(
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
            return Err(Error::invalid_config(format!(
                "externalSetMarkChain {chain} does not exist in the {family:?} nat table"
            )));
        }
        let mut b = Batch::new(family);
        // A repeated ADD, or one after the network was renamed: replace what this attachment
        // had. Our own chain is kept (re-declaring it below flushes it).
        let mut old = layout::removal(
            nat,
            family,
            |_, cid, ifname| cid == who.container_id && ifname == who.ifname,
            &[],
        );
        old.chains.remove(&own_chain);
        let build = |b: &mut Batch| -> tether_netfilter::Result<()> {
            old.add_to(b)?;
            layout::ensure_base(b, cfg, family, nat, t.get(Table::Raw))?;
            layout::add_attachment(b, cfg, who, addr)
        };
        build(&mut b).map_err(nf_err("building the port mapping rules"))?;
        Ok((b, ()))
    })
}

/// `route_localnet=1` on the interface that routes to the container, so that connections from
/// `127.0.0.1` can be DNAT-ed off `lo` (the kernel drops 127/8 sources on other interfaces
/// otherwise). Made safe by the guard in raw PREROUTING (see [`layout`]).
fn enable_route_localnet(ip: IpAddr) -> Result<(), Error> {
    let iface = nl::route_oif(ip).map_err(|e| {
        Error::internal(format!(
            "cannot find the host interface routing to {ip}: {e}"
        ))
    })?;
    if iface == "lo" {
        return Ok(());
    }
    // The name came from the kernel; still refuse anything that could leave the directory.
    if iface.contains('/') || iface == "." || iface == ".." {
        return Err(Error::internal(format!(
            "unexpected interface name {iface:?}"
        )));
    }
    let path = format!("/proc/sys/net/ipv4/conf/{iface}/route_localnet");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(&path, "1").map_err(|e| Error::internal(format!("cannot set {path} to 1: {e}")))
}

fn flushes(proto: Proto) -> bool {
    matches!(proto, Proto::Udp | Proto::Sctp)
}

fn ct_proto(proto: Proto) -> u8 {
    match proto {
        Proto::Udp => conntrack::PROTO_UDP,
        Proto::Sctp => conntrack::PROTO_SCTP,
        Proto::Tcp => 6,
    }
}

/// After ADD: entries for a newly published UDP/SCTP host port (of any destination the mapping
/// covers) would keep their old NAT decision. Failures are logged, not fatal (as the reference).
fn flush_after_add(cfg: &Config, families: &[Family]) {
    let ports: Vec<&Mapping> = cfg.mappings.iter().filter(|m| flushes(m.proto)).collect();
    if ports.is_empty() {
        return;
    }
    let res = conntrack::delete_where(|e| {
        let family = Family::from(e.orig.dst);
        families.contains(&family)
            && ports.iter().any(|m| {
                m.host_ip.applies_to(family)
                    && e.orig.proto == ct_proto(m.proto)
                    && e.orig.dst_port == Some(m.host_port)
                    && m.host_ip.addr().is_none_or(|a| a == e.orig.dst)
            })
    });
    match res {
        Ok(n) => tracing::debug!(deleted = n, "flushed stale conntrack entries"),
        Err(e) => tracing::warn!(error = %e, "failed to delete stale conntrack entries"),
    }
}

/// After DEL/GC: entries that were DNAT-ed to a removed container through one of its host ports.
fn flush_after_removal(gone: &[Published]) {
    let gone: Vec<&Published> = gone.iter().filter(|p| flushes(p.proto)).collect();
    if gone.is_empty() {
        return;
    }
    let res = conntrack::delete_where(|e| {
        gone.iter().any(|p| {
            e.orig.proto == ct_proto(p.proto)
                && e.orig.dst_port == Some(p.host_port)
                && p.to == Some(e.reply.src)
        })
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "failed to delete conntrack entries of removed mappings");
    }
}

impl Plugin for Portmap {
    fn name(&self) -> &'static str {
        "portmap"
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        let cfg = config::parse(req)?;
        let prev = req
            .prev_result
            .clone()
            .ok_or_else(|| Error::invalid_config("must be called as chained plugin"))?;
        if cfg.mappings.is_empty() {
            return Ok(prev);
        }
        let addrs = config::container_addrs(&prev, &req.ifname);
        let fams = families(&addrs);
        let nf = Netfilter::new();
        let who = owner(req);
        let guard = netfilter_lock();
        let results = per_family(&fams, |family| {
            let addr = addrs
                .iter()
                .find(|a| Family::of(a) == family)
                .expect("a family comes from an address");
            add_family(&nf, &cfg, &who, addr)?;
            if cfg.snat && family == Family::V4 {
                enable_route_localnet(addr.ip())?;
            }
            Ok::<(), Error>(())
        });
        if let Some(e) = results.into_iter().find_map(Result::err) {
            // All or nothing: undo every family (including a half-done one).
            for (family, undo) in fams.iter().zip(per_family(&fams, |f| remove(&nf, f, &who))) {
                if let Err(undo) = undo {
                    tracing::warn!(error = %undo, ?family, "rolling back port mappings failed");
                }
            }
            return Err(e);
        }
        drop(guard);
        flush_after_add(&cfg, &fams);
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<(), Error> {
        // The config is parsed only to reject malformed input; DEL needs none of it.
        config::parse(req)?;
        let nf = Netfilter::new();
        let who = owner(req);
        let guard = netfilter_lock();
        let mut gone = Vec::new();
        for res in per_family(&Family::ALL, |family| remove(&nf, family, &who)) {
            gone.extend(res?);
        }
        drop(guard);
        flush_after_removal(&gone);
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        let cfg = config::parse(req)?;
        let prev = req
            .prev_result
            .as_ref()
            .ok_or_else(|| Error::invalid_config("required prevResult missing"))?;
        if cfg.mappings.is_empty() {
            return Ok(());
        }
        let nf = Netfilter::new();
        let who = owner(req);
        let addrs = config::container_addrs(prev, &req.ifname);
        let results = per_family(&families(&addrs), |family| {
            let addr = addrs
                .iter()
                .find(|a| Family::of(a) == family)
                .expect("a family comes from an address");
            let t = nf
                .save_tables(family, tables(family, true))
                .map_err(nf_err("reading the iptables rules"))?;
            layout::check(&cfg, &who, addr, t.table(Table::Nat), t.get(Table::Raw)).map_err(|msg| {
                Error::new(ErrorCode::Internal, format!("portmap CHECK failed: {msg}"))
            })
        });
        results.into_iter().collect()
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), Error> {
        let nf = Netfilter::new();
        let network = req.conf.name.as_str();
        let is_stale = tether_kit::gc::stale(network, valid);
        let guard = netfilter_lock();
        let results = per_family(&Family::ALL, |family| {
            sweep(&nf, family, false, OnSaveError::SkipV6, |t| {
                let nat = t.table(Table::Nat);
                // Chains nobody jumps to and that hold no rules: left by an interrupted ADD of
                // an older version or by hand; nothing can be using them.
                let orphans: Vec<String> = nat
                    .chains
                    .iter()
                    .filter(|c| c.starts_with(layout::DN_PREFIX))
                    .filter(|c| {
                        !nat.rules
                            .iter()
                            .any(|r| &r.chain == *c || r.target() == Some(c.as_str()))
                    })
                    .cloned()
                    .collect();
                let r = layout::removal(nat, family, is_stale, &orphans);
                let mut b = Batch::new(family);
                r.add_to(&mut b)
                    .map_err(nf_err("removing stale port mappings"))?;
                Ok((b, r.published))
            })
        });
        drop(guard);
        let mut gone = Vec::new();
        for res in results {
            gone.extend(res?);
        }
        flush_after_removal(&gone);
        Ok(())
    }
}
