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

use std::os::fd::AsFd;
use std::path::Path;

use cni::{CniResult, Error, ErrorCode, Plugin, Request};
use tether_netlink::NsHandle;

pub struct Container;

impl Plugin for Container {
    fn name(&self) -> &'static str {
        "container"
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        let netns = req
            .netns
            .as_deref()
            .expect("the skel requires CNI_NETNS for ADD");
        let h = alive(netns)?;
        if let Some(prev) = &req.prev_result {
            return Ok(prev.clone());
        }
        tether_host::describe(&h, Some(&netns.display().to_string()))
    }

    fn del(&self, _req: &Request) -> Result<(), Error> {
        // The interfaces are the target container's; removing anything would cut it off.
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        alive(
            req.netns
                .as_deref()
                .expect("the skel requires CNI_NETNS for CHECK"),
        )
        .map(drop)
    }
}

/// Opens the target namespace and proves it answers: a namespace whose last process died and
/// whose path vanished is code 3 (container unknown); a path that is not a network namespace
/// is code 4.
pub fn alive(netns: &Path) -> Result<NsHandle, Error> {
    let fd = tether_netlink::open_netns(netns).map_err(|e| match e {
        tether_netlink::Error::NotFound(_) => Error::new(
            ErrorCode::UnknownContainer,
            format!(
                "the target container's network namespace {} does not exist",
                netns.display()
            ),
        ),
        tether_netlink::Error::NotANamespace(_) => Error::invalid_env(format!(
            "CNI_NETNS {} is not a network namespace",
            netns.display()
        )),
        e => Error::internal(e),
    })?;
    let h = NsHandle::for_netns(fd.as_fd())
        .map_err(|e| Error::internal(format!("netlink in {}: {e}", netns.display())))?;
    h.link_by_name("lo")
        .map_err(Error::internal)?
        .ok_or_else(|| Error::internal(format!("no lo in {}", netns.display())))?;
    Ok(h)
}
