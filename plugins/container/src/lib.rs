//! `container`: Docker's `--net=container:NAME`. `CNI_NETNS` is the target container's namespace,
//! which the new container joins as it is: same interfaces, same addresses, same ports.
//!
//! - ADD: the namespace must be alive (a real network namespace that answers netlink); nothing is
//!   created. The result lists the interfaces already there (with `sandbox`), their global
//!   addresses and the default routes, or `prevResult` unchanged when chained.
//! - DEL: never touches anything (the interfaces belong to the target container): success, always.
//! - CHECK: the namespace is still alive.
//!
//! Real orchestrators do not call CNI for this mode (a pod's containers just join the sandbox
//! namespace); the binary lets a CNI-only runtime treat every mode alike.

use std::path::Path;

use cni::{CniResult, Error, Plugin, Request};
use tether_kit::{RequestExt, describe, nl};
use tether_netlink::NsHandle;

pub struct Container;

impl Plugin for Container {
    fn name(&self) -> &'static str {
        "container"
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        let netns = req.netns_required()?;
        let h = alive(netns)?;
        if let Some(prev) = &req.prev_result {
            return Ok(prev.clone());
        }
        describe(&h, Some(&netns.display().to_string()))
    }

    fn del(&self, _req: &Request) -> Result<(), Error> {
        // The interfaces are the target container's; removing anything would cut it off.
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        alive(req.netns_required()?).map(drop)
    }
}

/// Opens the target namespace and proves it answers: a namespace whose last process died and
/// whose path vanished is code 3 (container unknown); a path that is not a network namespace
/// is code 4 (both decided by the kit's [`tether_kit::netns`]).
pub fn alive(netns: &Path) -> Result<NsHandle, Error> {
    let h = tether_kit::netns::handle(netns)?;
    h.link_by_name("lo")
        .map_err(nl(format!("look up lo in {}", netns.display())))?
        .ok_or_else(|| Error::internal(format!("no lo in {}", netns.display())))?;
    Ok(h)
}
