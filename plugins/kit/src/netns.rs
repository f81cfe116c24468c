//! The container's network namespace, opened with the decided codes.
//!
//! What counts as a namespace, and the codes for a bad `CNI_NETNS` (3: it does not exist, the
//! container is gone; 4: it is not a network namespace or cannot be opened), are decided once in
//! [`cni::netns`], because the skel checks `CNI_NETNS` before ADD and CHECK reach a plugin. Plugins
//! open the namespace through this module, so the same failure later (the namespace vanished in
//! between, DEL, CHECK) gets the same code and message.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use cni::Error;
use cni::netns::NetnsError;
use tether_netlink::NsHandle;

use crate::errors::nl;

/// Opens the namespace at `netns`: code 3 when it does not exist, 4 when it is not a network
/// namespace.
pub fn open(netns: &Path) -> Result<OwnedFd, Error> {
    cni::netns::open(netns).map_err(Error::from)
}

/// For DEL: a namespace that no longer exists is `None` (nothing of ours can be in it); a path
/// that is there but not a network namespace is still code 4.
pub fn open_existing(netns: &Path) -> Result<Option<OwnedFd>, Error> {
    match cni::netns::open(netns) {
        Ok(fd) => Ok(Some(fd)),
        Err(NetnsError::Missing(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A netlink handle acting inside the namespace at `netns` (see [`open`] for the codes).
pub fn handle(netns: &Path) -> Result<NsHandle, Error> {
    let fd = open(netns)?;
    handle_in(netns, &fd)
}

/// A netlink handle inside the namespace `fd` opened from `netns` (named in errors).
pub fn handle_in(netns: &Path, fd: &OwnedFd) -> Result<NsHandle, Error> {
    NsHandle::for_netns(fd.as_fd()).map_err(nl(format!("netlink in {}", netns.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_3_and_not_a_namespace_is_4() {
        let gone = Path::new("/run/netns/tether-kit-test-missing");
        let e = open(gone).unwrap_err();
        assert_eq!(e.code, 3);
        assert!(e.msg.contains(gone.to_str().unwrap()), "{}", e.msg);
        assert_eq!(handle(gone).unwrap_err().code, 3);
        assert!(open_existing(gone).unwrap().is_none());

        let file = tempfile::NamedTempFile::new().unwrap();
        for bad in [
            file.path(),
            Path::new("/proc/self"),
            Path::new("/proc/self/ns/mnt"),
        ] {
            let e = open(bad).unwrap_err();
            assert_eq!(e.code, 4, "{}: {}", bad.display(), e.msg);
            assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
            assert!(e.msg.contains(bad.to_str().unwrap()), "{}", e.msg);
            assert_eq!(handle(bad).unwrap_err().code, 4);
            assert_eq!(open_existing(bad).unwrap_err().code, 4);
        }
    }

    #[test]
    fn a_live_namespace_opens_by_any_spelling() {
        let ns = netns_fixtures::Netns::new().expect("create a network namespace");
        let h = handle(&ns.path()).unwrap();
        assert!(h.link_by_name("lo").unwrap().is_some());
        assert!(open_existing(&ns.path()).unwrap().is_some());
        open(Path::new("/proc/self/ns/net")).unwrap();
    }
}
