//! DEL: remove everything ADD created for this attachment, found from `(network, container id,
//! ifname)` alone: the veth pair and the IPAM lease; then, when it was the network's last
//! attachment on this host, what the network shared (see `teardown`).
//!
//! ```text
//! thread 1:  IPAM DEL ─────────────────────┐
//! thread 2:  delete host veth (its peer, the container's CNI_IFNAME, goes with it)
//!            └─> teardown: a veth of the network left? yes: done (the usual DEL)
//!                          no: under the network lock, masquerade chains, our portless bridge
//! ```
//!
//! The container's namespace is never touched: `CNI_NETNS` is only a path, and paths are reused
//! (`/proc/<pid>/ns/net` after pid reuse, `/run/netns/NAME` after re-creation), so the
//! interface named `CNI_IFNAME` there may belong to another, live container. The host veth is
//! provably ours (its name is a hash of container id and ifname, and its alias repeats both);
//! deleting it deletes its peer, which is the only container interface of this attachment.
//! A DEL that is not the network's last runs no iptables at all.
//!
//! Never fails because something is already gone (netns, link, `prevResult`); every step runs
//! even when an earlier one failed, and the first real failure is reported.

use cni::{Error, Request};
use tether_netlink::NsHandle;

use crate::config::Config;
use crate::names::{host_veth_name, parse_alias};
use crate::{nl, teardown};

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
    let host = NsHandle::current().map_err(nl("open netlink in the host namespace"));
    let host = host.as_ref().map_err(Clone::clone);
    let ipam = std::thread::scope(|s| {
        let ipam = conf.ipam.as_ref().map(|ipam| {
            s.spawn(move || {
                let r = cni::delegate::del(ipam, req);
                tracing::debug!("phase: IPAM DEL done");
                r
            })
        });
        keep(host.and_then(|host| {
            let r = del_host_veth(req, host);
            tracing::debug!("phase: host veth deleted");
            r?;
            let r = teardown::remove_if_unused(&conf, host);
            tracing::debug!("phase: network state checked");
            r
        }));
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

/// Deletes the host veth by its deterministic name, unless its alias says it belongs to another
/// container or interface (a hash collision) or it is not a veth at all. The network in the alias
/// is not compared: a network renamed between ADD and DEL must not leak the veth.
fn del_host_veth(req: &Request, host: &NsHandle) -> Result<(), Error> {
    let name = host_veth_name(&req.container_id, &req.ifname);
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
