//! `CNI_NETNS`: what counts as a network namespace handle, checked in one place.
//!
//! Any nsfs path is accepted (`/run/netns/x`, `/proc/PID/ns/net`, `/proc/PID/fd/N`): the spelling
//! of the path is never looked at, the object behind it is (statfs NSFS magic, then the namespace
//! type, since nsfs also holds mount, pid, user... namespaces). This is the only implementation of
//! that check: the skel runs it before ADD and CHECK, `tether-netlink`'s `open_netns`, the plugin
//! kit and the runtime's netns pins all call [`open`].
//!
//! It lives in the protocol crate, the floor every other crate stands on, because the skel must
//! answer for `CNI_NETNS` before any plugin runs. For the same reason the two codes a bad
//! `CNI_NETNS` gets are decided here, once ([`From<NetnsError> for Error`](NetnsError)):
//! - the path does not exist: the container is gone, code 3 (`ErrUnknownContainer`: the runtime
//!   need not clean up a namespace that is not there);
//! - the path exists but is not a network namespace, or cannot be opened: code 4 (an invalid
//!   environment variable, named in the message).

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorCode};

/// Statfs magic of nsfs, where namespace handles live.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Why a path is not a usable network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Nothing at the path (`ENOENT`): the namespace, and the container with it, is gone.
    #[error("network namespace {} does not exist", .0.display())]
    Missing(PathBuf),
    /// Something is there, but not a network namespace (a file, a directory, another namespace).
    #[error("CNI_NETNS {} is not a network namespace", .0.display())]
    NotANamespace(PathBuf),
    /// The path could not be opened for another reason (permissions, a loop, a NUL byte...).
    #[error("cannot open network namespace {} (CNI_NETNS): {source}", path.display())]
    Unusable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl NetnsError {
    /// The code the runtime gets for this failure: 3 when the namespace is gone, else 4.
    pub fn code(&self) -> ErrorCode {
        match self {
            NetnsError::Missing(_) => ErrorCode::UnknownContainer,
            NetnsError::NotANamespace(_) | NetnsError::Unusable { .. } => {
                ErrorCode::InvalidEnvironment
            }
        }
    }
}

impl From<NetnsError> for Error {
    fn from(e: NetnsError) -> Error {
        Error::new(e.code(), e.to_string())
    }
}

/// Opens the network namespace at `path` (see the module docs for what is accepted).
pub fn open(path: &Path) -> Result<OwnedFd, NetnsError> {
    let file = OpenOptions::new()
        .read(true)
        // Never block on a FIFO someone passed as a "netns".
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => NetnsError::Missing(path.to_path_buf()),
            _ => NetnsError::Unusable {
                path: path.to_path_buf(),
                source,
            },
        })?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open for the whole call and `st` is a valid out-pointer.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(NetnsError::Unusable {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
    if st.f_type as i64 != NSFS_MAGIC {
        return Err(NetnsError::NotANamespace(path.to_path_buf()));
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(NetnsError::NotANamespace(path.to_path_buf()));
    }
    Ok(file.into())
}

/// Whether `path` is (still) a network namespace handle, e.g. a pin that is still mounted.
pub fn is_netns(path: &Path) -> bool {
    open(path).is_ok()
}

/// The skel's check of `CNI_NETNS` for ADD and CHECK, with the decided codes.
pub fn check_netns_path(path: &Path) -> Result<(), Error> {
    open(path).map(drop).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_checks() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(check_netns_path(f.path()).unwrap_err().code, 4);
        assert_eq!(
            check_netns_path(std::path::Path::new("/nonexistent/ns"))
                .unwrap_err()
                .code,
            3
        );
        check_netns_path(std::path::Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(
            check_netns_path(std::path::Path::new("/proc"))
                .unwrap_err()
                .code,
            4
        );
    }

    #[test]
    fn only_network_namespaces_pass() {
        assert!(is_netns(Path::new("/proc/self/ns/net")));
        assert!(is_netns(Path::new("/proc/thread-self/ns/net")));
        // nsfs, but another namespace type.
        let e = open(Path::new("/proc/self/ns/mnt")).unwrap_err();
        assert!(matches!(e, NetnsError::NotANamespace(_)), "{e}");
        assert_eq!(e.code(), ErrorCode::InvalidEnvironment);
        assert!(!is_netns(Path::new("/proc/self")));
        let e = open(Path::new("/nonexistent/ns")).unwrap_err();
        assert!(matches!(e, NetnsError::Missing(_)), "{e}");
        let msg = Error::from(e).msg;
        assert!(msg.contains("/nonexistent/ns"), "{msg}");
        let e = Error::from(open(Path::new("/proc/self/status")).unwrap_err());
        assert!(
            e.msg.contains("CNI_NETNS") && e.msg.contains("/proc/self/status"),
            "{}",
            e.msg
        );
    }
}
