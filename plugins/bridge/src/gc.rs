//! GC (CNI 1.1.0): remove the host veths of every attachment of this network that the runtime
//! no longer lists, then what the network and vanished networks left, then let the IPAM release
//! its leases. The reference has no GC.
//!
//! ```text
//! 1. veths aliased tether:<this network>:<cid>:<ifname> not in the valid list   -> deleted
//! 2. no veth of this network left  -> its masquerade chains, its bridge if ours and portless
//!    (teardown::remove_if_unused, the same as the last DEL)
//! 3. sweep: masquerade chains of any network (comment `tether net=<name> masq`) with no veth
//!    left, and bridges marked tether-bridge:… with no port (teardown::sweep)
//! 4. IPAM GC
//! ```
//!
//! Host veths are found by their alias record, which carries the network, so attachments of
//! other networks sharing the bridge are never touched. Every decision in 2 and 3 is made again
//! under that network's (or bridge's) exclusive lock, so a concurrent ADD keeps what it needs.
//! This is how `tether network rm` (GC with an empty valid list) and `tether network prune` (GC
//! of every network) reach a network's state. Every step runs; the first failure is reported.

use cni::{Attachment, Error, Request};
use tether_netlink::NsHandle;

use crate::config::Config;
use crate::names::parse_alias;
use crate::{nl, teardown};

pub fn gc(req: &Request, valid: &[Attachment]) -> Result<(), Error> {
    let conf = Config::parse(req)?;
    let mut errors: Vec<Error> = Vec::new();

    match NsHandle::current().map_err(nl("open netlink in the host namespace")) {
        Ok(host) => {
            match gc_veths(&host, tether_kit::gc::stale(&conf.network, valid)) {
                Ok(n) if n > 0 => tracing::info!(removed = n, "GC removed stale host veths"),
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
            if let Err(e) = teardown::remove_if_unused(&conf, &host) {
                errors.push(e);
            }
            if let Err(e) = teardown::sweep(&host) {
                errors.push(e);
            }
        }
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

/// Deletes the host veths whose alias record `is_stale` says the runtime no longer lists.
fn gc_veths(host: &NsHandle, is_stale: impl Fn(&str, &str, &str) -> bool) -> Result<usize, Error> {
    let links = host.links().map_err(nl("list host links"))?;
    let stale: Vec<_> = links
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
        .filter(|l| {
            l.alias
                .as_deref()
                .and_then(parse_alias)
                .is_some_and(|(net, cid, ifname)| is_stale(net, cid, ifname))
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
