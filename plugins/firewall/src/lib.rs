//! `firewall`: lets a container's traffic through the host's `FORWARD` chain and optionally
//! isolates its bridge (chained after an interface plugin; every spec version, 0.1.0 to 1.1.0).
//!
//! The reference's iptables layout (`tether_netfilter::iptables::filter::rules`), applied by the
//! firewall backend ([`tether_netfilter::Firewall`]'s `filter_*`) with one `iptables-save` and
//! at most one `iptables-restore` per family, or on nftables (`backend: "nftables"`, or the
//! library's policy without a key: see `tether_netfilter::select_for`); `firewalld` is refused
//! with an explanation.
//! Beyond the reference: per-address rules carry the attachment's comment, so DEL removes them
//! without `prevResult` (and GC removes those of attachments that are gone).

mod config;

use std::net::IpAddr;

use cni::{Attachment, CniResult, Error, ErrorCode, Plugin, Request};
use tether_netfilter::{Family, FilterPolicy};

pub use config::{Config, IngressPolicy};

pub struct Firewall;

// Netfilter failures get the plugin kit's codes (7 for a refused value, 999 for a failed run).
use tether_kit::nf as nf_err;

use tether_kit::gc::owner;

fn policy(cfg: &Config, bridge: Option<&str>) -> FilterPolicy {
    FilterPolicy {
        admin_chain: cfg.admin_chain.clone(),
        ingress: cfg.ingress,
        bridge: bridge.map(str::to_string),
    }
}

/// Every address of `prev` (the reference covers all of them, not only the sandbox's).
fn ips(prev: &CniResult) -> Vec<IpAddr> {
    prev.ips.iter().map(|i| i.address.ip()).collect()
}

/// The families of `prev`'s addresses.
fn families(prev: &CniResult) -> Vec<Family> {
    Family::ALL
        .into_iter()
        .filter(|f| prev.ips.iter().any(|i| Family::of(&i.address) == *f))
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
        if cfg.ingress == IngressPolicy::Isolated {
            for family in families(&prev) {
                require_bridge_netfilter(family)?;
            }
        }
        tether_netfilter::select_for(cfg.backend)
            .filter_add(owner(req), &ips(&prev), &policy(&cfg, bridge))
            .map_err(nf_err("applying the firewall rules"))?;
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<(), Error> {
        let cfg = config::parse(req)?;
        // Addresses from prevResult, when there is one, catch rules the reference plugin wrote.
        let known: Vec<IpAddr> = req.prev_result.iter().flat_map(ips).collect();
        tether_netfilter::select_for(cfg.backend)
            .filter_delete(owner(req), &known)
            .map_err(nf_err("removing the firewall rules"))
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        let cfg = config::parse(req)?;
        let prev = req
            .prev_result
            .as_ref()
            .ok_or_else(|| Error::invalid_config("missing prevResult from earlier plugin"))?;
        let bridge = bridge_of(&cfg, prev)?;
        tether_netfilter::select_for(cfg.backend)
            .filter_check(owner(req), &ips(prev), &policy(&cfg, bridge))
            .map_err(|e| match e {
                tether_netfilter::Error::Check(msg) => {
                    Error::new(ErrorCode::Internal, format!("firewall CHECK failed {msg}"))
                }
                e => nf_err("reading the filter table")(e),
            })
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), Error> {
        let network = req.conf.name.as_str();
        let valid = tether_kit::gc::valid_owners(network, valid);
        let backend = config::parse(req).map(|c| c.backend).unwrap_or_default();
        tether_netfilter::select_for(backend)
            .filter_gc(network, &valid)
            .map_err(nf_err("removing stale firewall rules"))
    }
}
