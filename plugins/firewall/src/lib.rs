//! `firewall`: lets a container's traffic through the host's `FORWARD` chain and optionally
//! isolates its bridge (chained after an interface plugin; every spec version, 0.1.0 to 1.1.0).
//!
//! The reference's iptables layout (see [`rules`]), applied with one `iptables-save` and at most
//! one `iptables-restore` per family. Only the iptables backend exists: `firewalld` is refused
//! with an explanation, and there is no nftables backend (iptables-nft works on nftables hosts).
//! Beyond the reference: per-address rules carry the attachment's comment, so DEL removes them
//! without `prevResult` (and GC removes those of attachments that are gone).

mod config;
pub mod rules;

use std::collections::BTreeSet;
use std::net::IpAddr;

use cni::{Attachment, CniResult, Error, ErrorCode, Plugin, Request};
use tether_netfilter::lock::netfilter_lock;
use tether_netfilter::{
    Batch, Family, Netfilter, OnSaveError, SavedTable, SweepError, Table, comment, per_family,
};

pub use config::{Config, IngressPolicy};

pub struct Firewall;

// Netfilter failures get the plugin kit's codes (7 for a refused value, 999 for a failed run).
use tether_kit::nf as nf_err;

fn read(nf: &Netfilter, family: Family) -> Result<SavedTable, Error> {
    let text = nf
        .save(family, Table::Filter)
        .map_err(nf_err("reading the filter table"))?;
    Ok(SavedTable::parse(&text, Table::Filter))
}

/// [`tether_netfilter::sweep`] over the filter table, with the firewall's errors. DEL and GC pass
/// [`OnSaveError::SkipV6`].
fn sweep(
    nf: &Netfilter,
    family: Family,
    on_save_error: OnSaveError,
    mut plan: impl FnMut(&SavedTable) -> Result<Batch, Error>,
) -> Result<(), Error> {
    tether_netfilter::sweep(nf, family, &[Table::Filter], on_save_error, |t| {
        Ok((plan(t.table(Table::Filter))?, ()))
    })
    .map_err(|e| match e {
        SweepError::Save(e) => nf_err("reading the filter table")(e),
        SweepError::Plan(e) => e,
        SweepError::Apply(e) => nf_err("applying the firewall rules")(e),
    })
}

fn first_err(results: Vec<Result<(), Error>>) -> Result<(), Error> {
    results.into_iter().collect()
}

/// Every address of `prev` by family (the reference covers all of them, not only the sandbox's).
fn ips_by_family(prev: &CniResult) -> Vec<(Family, Vec<IpAddr>)> {
    let fams: BTreeSet<Family> = prev.ips.iter().map(|i| Family::of(&i.address)).collect();
    fams.into_iter()
        .map(|f| {
            let ips = prev
                .ips
                .iter()
                .map(|i| i.address.ip())
                .filter(|ip| Family::from(*ip) == f)
                .collect();
            (f, ips)
        })
        .collect()
}

/// The bridge an ingress policy applies to: the first interface of the result, as in the
/// reference (the bridge plugin lists its bridge first).
fn bridge_of<'a>(cfg: &Config, prev: &'a CniResult) -> Result<Option<&'a str>, Error> {
    if cfg.ingress == IngressPolicy::Open {
        return Ok(None);
    }
    match prev.interfaces.first().map(|i| i.name.as_str()) {
        Some(name) if !name.is_empty() => Ok(Some(name)),
        _ => Err(Error::invalid_config(format!(
            "ingressPolicy {:?} needs the bridge in prevResult.interfaces[0]: chain \"firewall\" \
             after \"bridge\"",
            cfg.ingress.as_str()
        ))),
    }
}

/// Traffic between two ports of one bridge reaches iptables only through br_netfilter; without
/// it `isolated` would silently isolate nothing, so refuse instead.
fn require_bridge_netfilter(family: Family) -> Result<(), Error> {
    let key = match family {
        Family::V4 => "bridge-nf-call-iptables",
        Family::V6 => "bridge-nf-call-ip6tables",
    };
    let path = format!("/proc/sys/net/bridge/{key}");
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == "1" => Ok(()),
        Ok(_) => Err(Error::internal(format!(
            "ingressPolicy \"isolated\" needs net.bridge.{key}=1 (it is 0, so traffic within a \
             bridge would bypass iptables); set it with sysctl"
        ))),
        Err(_) => Err(Error::internal(format!(
            "ingressPolicy \"isolated\" needs the br_netfilter module ({path} is missing): \
             modprobe br_netfilter"
        ))),
    }
}

impl Plugin for Firewall {
    fn name(&self) -> &'static str {
        "firewall"
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        let cfg = config::parse(req)?;
        let prev = req
            .prev_result
            .clone()
            .ok_or_else(|| Error::invalid_config("missing prevResult from earlier plugin"))?;
        let bridge = bridge_of(&cfg, &prev)?;
        let by_family = ips_by_family(&prev);
        if cfg.ingress == IngressPolicy::Isolated {
            for (family, _) in &by_family {
                require_bridge_netfilter(*family)?;
            }
        }
        let text = comment(&req.conf.name, &req.container_id, &req.ifname);
        let is_mine =
            |_: &str, cid: &str, ifname: &str| cid == req.container_id && ifname == req.ifname;
        let nf = Netfilter::new();
        let fams: Vec<Family> = by_family.iter().map(|(f, _)| *f).collect();
        let guard = netfilter_lock();
        let results = per_family(&fams, |family| {
            let ips = &by_family
                .iter()
                .find(|(f, _)| *f == family)
                .expect("family from the list")
                .1;
            sweep(&nf, family, OnSaveError::Fail, |t| {
                let mut b = Batch::new(family);
                rules::plan_add(&mut b, &cfg, t, &text, is_mine, ips, bridge)
                    .map_err(nf_err("building the firewall rules"))?;
                Ok(b)
            })
        });
        if let Err(e) = first_err(results) {
            // All or nothing for the per-address rules; the shared chains stay (as always).
            let undo = per_family(&fams, |family| remove(&nf, family, &is_mine, &[]));
            if let Err(u) = first_err(undo) {
                tracing::warn!(error = %u, "rolling back firewall rules failed");
            }
            return Err(e);
        }
        drop(guard);
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<(), Error> {
        config::parse(req)?;
        let is_mine =
            |_: &str, cid: &str, ifname: &str| cid == req.container_id && ifname == req.ifname;
        // Addresses from prevResult, when there is one, catch rules the reference plugin wrote.
        let known: Vec<IpAddr> = req
            .prev_result
            .iter()
            .flat_map(|p| p.ips.iter().map(|i| i.address.ip()))
            .collect();
        let nf = Netfilter::new();
        let _guard = netfilter_lock();
        first_err(per_family(&Family::ALL, |family| {
            remove(&nf, family, &is_mine, &known)
        }))
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        let cfg = config::parse(req)?;
        let prev = req
            .prev_result
            .as_ref()
            .ok_or_else(|| Error::invalid_config("missing prevResult from earlier plugin"))?;
        let bridge = bridge_of(&cfg, prev)?;
        let text = comment(&req.conf.name, &req.container_id, &req.ifname);
        let nf = Netfilter::new();
        let by_family = ips_by_family(prev);
        let fams: Vec<Family> = by_family.iter().map(|(f, _)| *f).collect();
        first_err(per_family(&fams, |family| {
            let ips = &by_family
                .iter()
                .find(|(f, _)| *f == family)
                .expect("family from the list")
                .1;
            let t = read(&nf, family)?;
            rules::check(&cfg, &t, &text, ips, bridge).map_err(|msg| {
                Error::new(
                    ErrorCode::Internal,
                    format!("firewall CHECK failed ({family:?}): {msg}"),
                )
            })
        }))
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), Error> {
        let network = req.conf.name.as_str();
        let is_stale = tether_kit::gc::stale(network, valid);
        let nf = Netfilter::new();
        let _guard = netfilter_lock();
        first_err(per_family(&Family::ALL, |family| {
            remove(&nf, family, &is_stale, &[])
        }))
    }
}

/// Deletes the per-address rules `select` picks (by comment), plus the reference's uncommented
/// rules for `known` addresses. Reads the table once; runs nothing when there is nothing to do.
fn remove(
    nf: &Netfilter,
    family: Family,
    select: &(impl Fn(&str, &str, &str) -> bool + Sync),
    known: &[IpAddr],
) -> Result<(), Error> {
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
