//! `portmap`: publishes container ports on the host (chained after an interface plugin).
//!
//! Host ports from `runtimeConfig.portMappings` are DNAT-ed to the container addresses found in
//! `prevResult`, for traffic from other hosts, from the host itself, from `127.0.0.1` and from
//! containers (hairpin). The rules are the firewall backend's business
//! ([`tether_netfilter::Firewall`]'s `publish_*`, chosen by [`tether_netfilter::select`]); see
//! `tether_netfilter::iptables::ports` for the iptables layout and why it is safe. This crate
//! parses the config, picks the container's addresses, sets `route_localnet` and flushes
//! conntrack.
//!
//! Beyond the reference plugin:
//! - two execs per family per call, and none for ADD/CHECK without mappings: ADD and DEL list
//!   `TETHER-HOSTPORT-DNAT` alone and write with one `iptables-restore`; what the entry rules
//!   do not settle reads the nat and raw tables with one `iptables-save`; CHECK is one restore
//!   of `-C` lines built by the same functions as ADD's rules;
//! - a host port already published by another attachment is refused, naming the holder;
//! - DEL and GC find rules by the container id and interface in their comments, so they work
//!   without `portMappings`, without `prevResult` and after the network was renamed;
//! - stale UDP/SCTP conntrack entries are flushed on DEL too (the reference: ADD only);
//! - packets to 127.0.0.0/8 from off-host are dropped (the `route_localnet` guard).

mod config;
mod conntrack;
mod nl;

use std::net::IpAddr;

use cni::{Attachment, CniResult, Error, ErrorCode, Plugin, Request};
use tether_netfilter::{AttachmentId, Family, Firewall, Published};

pub use config::{Config, HostIp, Mapping, MarkChain, Proto};

pub struct Portmap;

// Netfilter failures get the plugin kit's codes (7 for a refused value, 999 for a failed run).
use tether_kit::nf as nf_err;

use tether_kit::RequestExt;
use tether_kit::gc::owner;

/// Rolls back what [`Firewall::publish_add`] wrote, after a later step of ADD failed.
fn roll_back(fw: &dyn Firewall, who: AttachmentId<'_>) {
    if let Err(e) = fw.publish_delete(who) {
        tracing::warn!(error = %e, "rolling back port mappings failed");
    }
}

/// `route_localnet=1` on the interface that routes to the container, so that connections from
/// `127.0.0.1` can be DNAT-ed off `lo` (the kernel drops 127/8 sources on other interfaces
/// otherwise). Made safe by the guard in raw PREROUTING (see the iptables backend's `ports`
/// layout).
///
/// A container address the host has no route to (a `prevResult` from a plugin that routes
/// differently, e.g. `192.0.2.50/24` with no route) has no interface to set it on: the step is
/// skipped with a warning, as the reference skips it. Only localhost publishing to that
/// container cannot work then; everything else is in place.
fn enable_route_localnet(ip: IpAddr) -> Result<(), Error> {
    let iface = match nl::route_oif(ip) {
        Ok(iface) => iface,
        Err(e) => {
            tracing::warn!(
                %ip, error = %e,
                "no host interface routes to the container; not enabling route_localnet \
                 (connections to 127.0.0.1 will not reach it)"
            );
            return Ok(());
        }
    };
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
            .prev_result_required("must be called as chained plugin")?
            .clone();
        if cfg.mappings.is_empty() {
            return Ok(prev);
        }
        let addrs = config::container_addrs(&prev, &req.ifname);
        let fams: Vec<Family> = Family::ALL
            .into_iter()
            .filter(|f| addrs.iter().any(|a| Family::of(a) == *f))
            .collect();
        let fw = tether_netfilter::select_for(config::backend(req)?);
        let who = owner(req);
        fw.publish_add(who, &addrs, &cfg)
            .map_err(nf_err("publishing the ports"))?;
        if cfg.snat
            && let Some(v4) = addrs.iter().find(|a| Family::of(a) == Family::V4)
            && let Err(e) = enable_route_localnet(v4.ip())
        {
            // All or nothing.
            roll_back(fw.as_ref(), who);
            return Err(e);
        }
        flush_after_add(&cfg, &fams);
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<(), Error> {
        // The config is parsed only to reject malformed input; DEL needs none of it.
        config::parse(req)?;
        let gone = tether_netfilter::select_for(config::backend(req)?)
            .publish_delete(owner(req))
            .map_err(nf_err("removing port mappings"))?;
        flush_after_removal(&gone);
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        let cfg = config::parse(req)?;
        let prev = req.prev_result_required("required prevResult missing")?;
        if cfg.mappings.is_empty() {
            return Ok(());
        }
        let addrs = config::container_addrs(prev, &req.ifname);
        tether_netfilter::select_for(config::backend(req)?)
            .publish_check(owner(req), &addrs, &cfg)
            .map_err(|e| match e {
                tether_netfilter::Error::Check(msg) => {
                    Error::new(ErrorCode::Internal, format!("portmap CHECK failed: {msg}"))
                }
                e => nf_err("checking port mappings")(e),
            })
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), Error> {
        let network = req.conf.name.as_str();
        let valid = tether_kit::gc::valid_owners(network, valid);
        let backend = config::backend(req).unwrap_or_default();
        let gone = tether_netfilter::select_for(backend)
            .publish_gc(network, &valid)
            .map_err(nf_err("removing stale port mappings"))?;
        flush_after_removal(&gone);
        Ok(())
    }
}
