//! Opening network namespaces by path, and running code inside one.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

use crate::error::{Error, Result, from_errno, from_io};

/// Opens a network namespace by any nsfs path (`/run/netns/x`, `/proc/PID/ns/net`,
/// `/proc/PID/fd/N`): the path's spelling is not checked, the object behind it is.
///
/// A missing path is `Error::NotFound`; anything that is not a network namespace (a regular
/// file, another namespace type) is `Error::NotANamespace`.
pub fn open_netns(path: &Path) -> Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        // Never block on a FIFO someone passed as a "netns".
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| from_io("open netns", path.display(), e))?;
    let fs = fstatfs(&file).map_err(|e| from_errno("statfs", path.display(), e as i32))?;
    if fs.filesystem_type() != NSFS_MAGIC {
        return Err(Error::NotANamespace(path.to_path_buf()));
    }
    // nsfs also holds mount, pid, user... namespaces; setns would fail later with a vague EINVAL.
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(Error::NotANamespace(path.to_path_buf()));
    }
    Ok(file.into())
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
