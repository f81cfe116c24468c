//! `host`: Docker's `--net=host`. The container shares the host's network namespace, so there is
//! nothing to create and nothing to delete; the plugin only makes sure the runtime really means
//! the host's namespace, and reports what is there.
//!
//! - ADD: `CNI_NETNS` must be the namespace this plugin runs in (compared by device and inode, so
//!   any spelling of the path works); any other namespace is refused with code 4. The result lists
//!   the host's interfaces (no `sandbox`), their global addresses, and the default routes.
//! - DEL: nothing, success.
//! - CHECK: the same namespace test as ADD.
//!
//! The reference Go skel refuses exactly this (`CNI_NETNS` equal to the plugin's own namespace,
//! code 8); our skel has no such check. Real orchestrators never call CNI for host networking.
//!
//! The report is the plugin kit's [`tether_kit::describe`], shared with `container`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cni::{CniResult, Error, ErrorCode, Plugin, Request};
use tether_kit::{RequestExt, describe, nl};
use tether_netlink::NsHandle;

pub struct Host;

impl Plugin for Host {
    fn name(&self) -> &'static str {
        "host"
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        let netns = req.netns_required()?;
        require_own_netns(netns)?;
        if let Some(prev) = &req.prev_result {
            return Ok(prev.clone());
        }
        let h = NsHandle::current().map_err(nl("open netlink in the host namespace"))?;
        describe(&h, None)
    }

    fn del(&self, _req: &Request) -> Result<(), Error> {
        // Host mode created nothing, so there is nothing to remove, whatever CNI_NETNS says.
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        require_own_netns(req.netns_required()?)
    }
}

/// Refuses any `CNI_NETNS` other than the namespace this process runs in.
pub fn require_own_netns(netns: &Path) -> Result<(), Error> {
    // What is not a network namespace at all gets the codes every plugin gives it (3 or 4).
    tether_kit::netns::open(netns)?;
    let own = Path::new("/proc/self/ns/net");
    let same = same_netns(netns, own).map_err(|e| {
        Error::invalid_env(format!("cannot inspect CNI_NETNS {}: {e}", netns.display()))
    })?;
    if !same {
        return Err(Error::new(
            ErrorCode::InvalidEnvironment,
            format!(
                "host mode requires CNI_NETNS to be the host's own network namespace; got {}, which is another namespace",
                netns.display()
            ),
        ));
    }
    Ok(())
}

/// Do two paths name the same namespace? A namespace's identity is the (device, inode) of its
/// nsfs file; paths differ (`/proc/PID/ns/net`, `/run/netns/x`, `/proc/PID/fd/N`) and `stat`
/// follows the magic links to that file.
pub fn same_netns(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_by_any_spelling() {
        let own = Path::new("/proc/self/ns/net");
        assert!(same_netns(own, Path::new("/proc/thread-self/ns/net")).unwrap());
        let by_pid = format!("/proc/{}/ns/net", std::process::id());
        require_own_netns(Path::new(&by_pid)).unwrap();
        // Another namespace type of the same process is not our network namespace.
        let e = require_own_netns(Path::new("/proc/self/ns/uts")).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEnvironment as u32);
        assert!(e.msg.contains("/proc/self/ns/uts"), "{}", e.msg);
    }

    #[test]
    fn another_network_namespace_is_refused() {
        let other = netns_fixtures::Netns::new().expect("create a network namespace");
        let e = require_own_netns(&other.path()).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("host's own network namespace"), "{}", e.msg);
    }
}
