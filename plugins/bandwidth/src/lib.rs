//! The `bandwidth` CNI plugin (chained): rate limits on the container's
//! host-side veth, as the reference plugin programs them.
//!
//! - Ingress (towards the container): a `tbf` root qdisc (1:) on the host veth.
//! - Egress (from the container): the host veth's `ingress` qdisc redirects everything to an `ifb`
//!   device (`bwp` + hash of network and container), whose `tbf` root qdisc does the shaping. The
//!   ifb is appended to the result's interfaces.
//!
//! DEL deletes the ifb and this plugin's qdiscs on the veth (anything missing is success); CHECK
//! compares the qdiscs with the config.

pub mod config;
pub mod link;
pub mod tc;

use cni::{CniResult, Interface, Plugin, Request};
use config::Limits;
use netlink_packet_route::tc::TcHandle;
use tc::Tbf;
use tether_kit::RequestExt;
use tether_netlink::{Rtnl, format_mac};

/// The plugin kit's error type: its variants' codes are the kit's one table.
pub use tether_kit::Error;

/// The plugin, for `cni::run`.
pub struct BandwidthPlugin;

const UNCHAINED: &str = "bandwidth must be chained: prevResult is missing";

impl Plugin for BandwidthPlugin {
    fn name(&self) -> &'static str {
        "bandwidth"
    }

    fn add(&self, req: &Request) -> Result<CniResult, cni::Error> {
        let limits = config::parse(&req.raw)?;
        if limits.ingress().is_none() && limits.egress().is_none() {
            return Ok(req.prev_result.clone().unwrap_or_default());
        }
        let mut result = req.prev_result_required(UNCHAINED)?.clone();
        let netns = req.netns_required()?;
        let ifb = config::ifb_name(&req.conf.name, &req.container_id);
        let peer = link::veth_peer_index(netns, &req.ifname)?;
        let made = on_host(async |h| {
            let veth = host_veth(&h, &result, peer, &req.ifname).await?;
            add_limits(&h, &veth, &limits, &ifb).await
        })?;
        if let Some(ifb) = made
            && !result.interfaces.iter().any(|i| i.name == ifb.name)
        {
            result.interfaces.push(Interface {
                name: ifb.name,
                mac: ifb.mac.map(format_mac),
                ..Default::default()
            });
        }
        Ok(result)
    }

    fn del(&self, req: &Request) -> Result<(), cni::Error> {
        let ifb = config::ifb_name(&req.conf.name, &req.container_id);
        // The veth is found through the container; when the namespace is gone, so is the veth
        // (and its qdiscs) and only the ifb is left to delete.
        let peer = req
            .netns
            .as_deref()
            .filter(|p| p.exists())
            .and_then(|ns| link::veth_peer_index(ns, &req.ifname).ok());
        Ok(on_host(async |h| {
            link::delete(&h, &ifb).await?;
            if let Some(index) = peer
                && let Some(veth) = link::by_index(&h, index).await?
            {
                tc::delete_qdisc(&h, veth.index, TcHandle::ROOT, "tbf").await?;
                tc::delete_qdisc(&h, veth.index, TcHandle::INGRESS, "ingress").await?;
            }
            Ok(())
        })?)
    }

    fn check(&self, req: &Request) -> Result<(), cni::Error> {
        let limits = config::parse(&req.raw)?;
        let result = req.prev_result_required(UNCHAINED)?;
        let netns = req.netns_required()?;
        let ifb = config::ifb_name(&req.conf.name, &req.container_id);
        let peer = link::veth_peer_index(netns, &req.ifname)?;
        Ok(on_host(async |h| {
            let veth = host_veth(&h, result, peer, &req.ifname).await?;
            check_limits(&h, &veth, &limits, &ifb).await
        })?)
    }
}

/// Runs `f` over a netlink connection in the plugin's own namespace, the host's: the veth's host
/// end and the ifb live there.
fn on_host<T>(f: impl AsyncFnOnce(rtnetlink::Handle) -> Result<T, Error>) -> Result<T, Error> {
    Rtnl::current()?.block_on(f)
}

/// The host end of the container's veth, as the reference finds it: the peer (`peer`, its index
/// as seen from the container) of `ifname`, which must be listed in `prevResult` as a host
/// interface (no sandbox).
///
/// The reference refuses a `prevResult` without interfaces (and so every config below 0.3.0,
/// whose results cannot carry any). The veth peer is found through the kernel anyway, so such a
/// result is accepted here: the issue asks every plugin to work with every spec version.
async fn host_veth(
    h: &rtnetlink::Handle,
    result: &CniResult,
    peer: u32,
    ifname: &str,
) -> Result<link::Link, Error> {
    let veth = link::by_index(h, peer).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "the veth peer of {ifname} (index {peer}) is not in the host namespace"
        ))
    })?;
    let listed = result.interfaces.is_empty()
        || result
            .interfaces
            .iter()
            .any(|i| i.sandbox.as_deref().is_none_or(str::is_empty) && i.name == veth.name);
    if !listed {
        return Err(Error::NotFound(format!(
            "the veth peer of {ifname} ({}) is not a host interface of prevResult",
            veth.name
        )));
    }
    Ok(veth)
}

async fn add_limits(
    h: &rtnetlink::Handle,
    veth: &link::Link,
    limits: &Limits,
    ifb: &str,
) -> Result<Option<link::Link>, Error> {
    let ticks = tc::tick_in_usec();
    if let Some((rate, burst)) = limits.ingress() {
        tc::set_root_tbf(h, veth.index, &Tbf::new(rate, burst, ticks)).await?;
    }
    let Some((rate, burst)) = limits.egress() else {
        return Ok(None);
    };
    let dev = link::ensure_ifb(h, ifb, veth.mtu, veth.tx_qlen).await?;
    tc::redirect_ingress(h, veth.index, dev.index).await?;
    tc::set_root_tbf(h, dev.index, &Tbf::new(rate, burst, ticks)).await?;
    Ok(Some(dev))
}

async fn check_limits(
    h: &rtnetlink::Handle,
    veth: &link::Link,
    limits: &Limits,
    ifb: &str,
) -> Result<(), Error> {
    let ticks = tc::tick_in_usec();
    let root_tbf = async |index: u32, name: &str, want: Tbf| -> Result<(), Error> {
        let qs = tc::qdiscs(h, index).await?;
        let have = qs
            .iter()
            .find(|q| q.parent == TcHandle::ROOT)
            .and_then(|q| q.tbf);
        match have {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(Error::Mismatch(format!(
                "tbf on {name} has rate {} B/s, buffer {} ticks, limit {} B; the config means {} B/s, {} ticks, {} B",
                t.rate, t.buffer, t.limit, want.rate, want.buffer, want.limit
            ))),
            None => Err(Error::Mismatch(format!("no tbf root qdisc on {name}"))),
        }
    };
    if let Some((rate, burst)) = limits.ingress() {
        root_tbf(veth.index, &veth.name, Tbf::new(rate, burst, ticks)).await?;
    }
    if let Some((rate, burst)) = limits.egress() {
        let dev = link::by_name(h, ifb)
            .await?
            .ok_or_else(|| Error::Mismatch(format!("ifb device {ifb} does not exist")))?;
        root_tbf(dev.index, ifb, Tbf::new(rate, burst, ticks)).await?;
        if !tc::ingress_redirects(h, veth.index)
            .await?
            .contains(&dev.index)
        {
            return Err(Error::Mismatch(format!(
                "no ingress filter on {} redirects to {ifb}",
                veth.name
            )));
        }
    }
    Ok(())
}
