//! Opening network namespaces by path, and running code inside one.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use cni::netns::NetnsError;
use nix::sched::{CloneFlags, setns};

use crate::error::{Error, Result, from_errno, from_io};

/// Opens a network namespace by any nsfs path (`/run/netns/x`, `/proc/PID/ns/net`,
/// `/proc/PID/fd/N`): the path's spelling is not checked, the object behind it is. The check is
/// the protocol's own ([`cni::netns::open`]), so every crate agrees on what a namespace is.
///
/// A missing path is `Error::NotFound`; anything that is not a network namespace (a regular
/// file, another namespace type) is `Error::NotANamespace`.
pub fn open_netns(path: &Path) -> Result<OwnedFd> {
    cni::netns::open(path).map_err(|e| match e {
        NetnsError::Missing(_) => Error::NotFound(format!("open netns {}: {e}", path.display())),
        NetnsError::NotANamespace(p) => Error::NotANamespace(p),
        NetnsError::Unusable { source, .. } => from_io("open netns", path.display(), source),
    })
}

/// Runs `f` on a short-lived thread that entered the network namespace behind `ns` (see
/// [`open_netns`]) and returns its value: for what follows the calling thread's namespace, such as
/// `/proc/sys/net` files, sockets or [`crate::NsHandle::current`].
///
/// The calling thread's namespace never changes. Failing to enter the namespace is the `Err`; a
/// panic in `f` is resumed on the caller with its message.
pub fn in_netns<T: Send>(ns: BorrowedFd<'_>, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            // This thread exists only for `f` and dies right after, so it never switches back.
            setns(ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| from_errno("enter", "network namespace", e as i32))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// [`in_netns`] for `Some(ns)`; runs `f` directly on the calling thread for `None`.
pub(crate) fn run_in<T: Send>(
    ns: Option<BorrowedFd<'_>>,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    match ns {
        Some(ns) => in_netns(ns, f)?,
        None => f(),
    }
}
