//! DEL: remove everything ADD created for this attachment, found from `(network, container id,
//! ifname)` alone: the veth pair and the IPAM lease.
//!
//! No iptables at all: with `ipMasq` the network's masquerade chain and its jump are shared by
//! every container of the subnet and stay for the next one, like the bridge and its gateway
//! address (see tether-netfilter's masq module).
//!
//! Never fails because something is already gone (netns, link, `prevResult`); every step runs
//! even when an earlier one failed, and the first real failure is reported.

use std::os::fd::AsFd;

use cni::{Error, Request};
use tether_netlink::NsHandle;

use crate::config::Config;
use crate::names::{host_veth_name, parse_alias};
use crate::nl;

pub fn del(req: &Request) -> Result<(), Error> {
    let conf = Config::parse(req)?;
    let mut first_err: Option<Error> = None;
    let mut keep = |r: Result<(), Error>| {
        if let Err(e) = r {
            tracing::warn!(error = %e, "DEL step failed");
            first_err.get_or_insert(e);
        }
    };

    // The IPAM release runs beside the link deletion: deleting a veth is mostly the kernel
    // waiting for RCU grace periods (~20 ms), time in which host-local's exec and release fit.
    // Releasing before the link is gone is the reference's own order (it calls IPAM DEL first):
    // an ADD that gets the address meanwhile configures it in another namespace, on another
    // port, while this one is already on its way out.
    let ipam = std::thread::scope(|s| {
        let ipam = conf.ipam.as_ref().map(|ipam| {
            s.spawn(move || {
                let r = cni::delegate::del(ipam, req);
                tracing::debug!("phase: IPAM DEL done");
                r
            })
        });
        keep(del_in_container(req));
        tracing::debug!("phase: container interface deleted");
        keep(del_host_veth(req));
        tracing::debug!("phase: host veth deleted");
        ipam.map(|h| h.join())
    });
    match ipam {
        Some(Ok(r)) => keep(r),
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => {}
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Deletes `CNI_IFNAME` in the container when the namespace still exists and the interface is a
/// veth. Usually deleting the host end already removed it; this covers attachments whose host
/// end we cannot name (made by the reference plugin before a switch to Tether).
fn del_in_container(req: &Request) -> Result<(), Error> {
    let Some(path) = &req.netns else {
        return Ok(());
    };
    let fd = match tether_netlink::open_netns(path) {
        Ok(fd) => fd,
        Err(e) => {
            // Gone or not a namespace any more: nothing of ours can be in it.
            tracing::debug!(netns = %path.display(), error = %e, "container netns unusable, skipping");
            return Ok(());
        }
    };
    let cont = NsHandle::for_netns(fd.as_fd()).map_err(nl("open netlink in the container"))?;
    let Some(link) = cont
        .link_by_name(&req.ifname)
        .map_err(nl("look up CNI_IFNAME in the container"))?
    else {
        return Ok(());
    };
    if link.kind.as_deref() != Some("veth") {
        tracing::warn!(ifname = %req.ifname, kind = ?link.kind, "not a veth: not ours, left alone");
        return Ok(());
    }
    match cont.del_link(link.index) {
        Ok(()) | Err(tether_netlink::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(nl(format!("delete {} in the container", req.ifname))(e)),
    }
}

/// Deletes the host veth by its deterministic name, unless its alias says it belongs to another
/// container or interface (a hash collision) or it is not a veth at all. The network in the alias
/// is not compared: a network renamed between ADD and DEL must not leak the veth.
fn del_host_veth(req: &Request) -> Result<(), Error> {
    let name = host_veth_name(&req.container_id, &req.ifname);
    let host = NsHandle::current().map_err(nl("open netlink in the host namespace"))?;
    let Some(link) = host
        .link_by_name(&name)
        .map_err(nl(format!("look up host veth {name}")))?
    else {
        return Ok(());
    };
    if link.kind.as_deref() != Some("veth") {
        tracing::warn!(%name, kind = ?link.kind, "not a veth: not ours, left alone");
        return Ok(());
    }
    if let Some((_, cid, ifname)) = link.alias.as_deref().and_then(parse_alias)
        && (cid, ifname) != (req.container_id.as_str(), req.ifname.as_str())
    {
        tracing::warn!(%name, alias = ?link.alias, "host veth belongs to another attachment, left alone");
        return Ok(());
    }
    match host.del_link(link.index) {
        Ok(()) | Err(tether_netlink::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(nl(format!("delete host veth {name}"))(e)),
    }
}
