//! GC: remove the host veths of every attachment of this network that the runtime no longer
//! lists, then let the IPAM release its leases. The reference has no GC.
//!
//! Host veths are found by their alias record (`tether:<network>:<cid>:<ifname>`), which carries
//! the network, so attachments of other networks sharing the bridge are never touched. There is
//! nothing per attachment in iptables: the network's masquerade chains are shared and stay, like
//! the bridge. Every step runs; the first failure is reported.

use cni::{Attachment, Error, Request};
use tether_netlink::NsHandle;

use crate::config::Config;
use crate::names::parse_alias;
use crate::nl;

pub fn gc(req: &Request, valid: &[Attachment]) -> Result<(), Error> {
    let conf = Config::parse(req)?;
    let is_valid = |cid: &str, ifname: &str| {
        valid
            .iter()
            .any(|a| a.container_id == cid && a.ifname == ifname)
    };
    let mut errors: Vec<Error> = Vec::new();

    match gc_veths(&conf, &is_valid) {
        Ok(n) if n > 0 => tracing::info!(removed = n, "GC removed stale host veths"),
        Ok(_) => {}
        Err(e) => errors.push(e),
    }

    if let Some(ipam) = &conf.ipam
        && let Err(e) = cni::delegate::gc(ipam, req)
    {
        errors.push(e);
    }
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn gc_veths(conf: &Config, is_valid: &dyn Fn(&str, &str) -> bool) -> Result<usize, Error> {
    let host = NsHandle::current().map_err(nl("open netlink in the host namespace"))?;
    let links = host.links().map_err(nl("list host links"))?;
    let stale: Vec<_> = links
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
        .filter(|l| {
            l.alias
                .as_deref()
                .and_then(parse_alias)
                .is_some_and(|(net, cid, ifname)| net == conf.network && !is_valid(cid, ifname))
        })
        .collect();
    let mut removed = 0;
    for l in stale {
        match host.del_link(l.index) {
            Ok(()) => removed += 1,
            Err(tether_netlink::Error::NotFound(_)) => {}
            Err(e) => return Err(nl(format!("delete stale host veth {}", l.name))(e)),
        }
    }
    Ok(removed)
}
