//! The crate's one error type, and the one place where errnos become variants.

use std::fmt::Display;
use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every message names the operation and the object it was applied to, e.g.
/// `create bridge tether0: File exists (os error 17)`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{} is not a network namespace", .0.display())]
    NotANamespace(PathBuf),
    /// A caller-supplied value that cannot be used (bad sysctl key, mixed address families, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("{op}: {msg}")]
    Netlink {
        op: &'static str,
        /// Positive errno, or 0 when the failure did not come from the kernel.
        errno: i32,
        msg: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The errno behind this error, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { errno, .. } if *errno != 0 => Some(*errno),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Maps an errno from `op` on `obj` to an [`Error`]. All errno interpretation lives here.
pub(crate) fn from_errno(op: &'static str, obj: impl Display, errno: i32) -> Error {
    let text = format!("{op} {obj}: {}", io::Error::from_raw_os_error(errno));
    match errno {
        libc::EEXIST => Error::Exists(text),
        // ENODEV: no such link; ENOENT: no such file/object; ESRCH: no such route;
        // EADDRNOTAVAIL: no such address.
        libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL => Error::NotFound(text),
        libc::EBUSY => Error::Busy(text),
        libc::EPERM | libc::EACCES => Error::PermissionDenied(text),
        _ => Error::Netlink {
            op,
            errno,
            msg: text,
        },
    }
}

/// Same mapping for an `io::Error` (file and socket calls); errors without an errno stay `Io`.
pub(crate) fn from_io(op: &'static str, obj: impl Display, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(errno) => match from_errno(op, &obj, errno) {
            Error::Netlink { .. } => Error::Io {
                context: format!("{op} {obj}"),
                source: e,
            },
            mapped => mapped,
        },
        None => Error::Io {
            context: format!("{op} {obj}"),
            source: e,
        },
    }
}

/// A failure reported by rtnetlink: kernel NACKs go through [`from_errno`], the rest (a closed
/// connection, an undecodable reply) stay `Netlink` with errno 0.
pub(crate) fn from_rtnl(op: &'static str, obj: impl Display, e: rtnetlink::Error) -> Error {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() != 0 => {
            from_errno(op, obj, -m.raw_code())
        }
        other => Error::Netlink {
            op,
            errno: 0,
            msg: format!("{op} {obj}: {other}"),
        },
    }
}
