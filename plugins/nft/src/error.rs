//! Typed errors: what the model refused, and what the kernel answered for which object.

use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model refused it before anything was sent.
    #[error("invalid nftables object: {0}")]
    Invalid(String),
    /// `EEXIST`: e.g. an element that is already in its set.
    #[error("{op}: already exists")]
    Exists { op: String },
    /// `ENOENT`: a table, chain, set or element that is not there.
    #[error("{op}: not found")]
    NotFound { op: String },
    /// `EPERM`: no `CAP_NET_ADMIN` over the namespace.
    #[error("{op}: permission denied")]
    PermissionDenied { op: String },
    /// nf_tables (or the family, or an expression) is not available in this kernel or namespace.
    #[error("{op}: nftables unavailable here ({source})")]
    Unavailable { op: String, source: io::Error },
    /// Any other errno the kernel answered for one message of the batch.
    #[error("{op}: {source}")]
    Kernel { op: String, source: io::Error },
    /// The socket itself failed (create, enter the namespace, send, receive).
    #[error("nftables socket: {0}")]
    Socket(#[source] io::Error),
}

impl Error {
    /// The error the kernel's `errno` (positive) means for the message described by `op`.
    pub(crate) fn from_errno(op: String, errno: i32) -> Error {
        let source = io::Error::from_raw_os_error(errno);
        match errno {
            libc::EEXIST => Error::Exists { op },
            libc::ENOENT => Error::NotFound { op },
            libc::EPERM => Error::PermissionDenied { op },
            libc::EAFNOSUPPORT | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT => {
                Error::Unavailable { op, source }
            }
            _ => Error::Kernel { op, source },
        }
    }

    /// The kernel's errno, if the kernel answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Exists { .. } => Some(libc::EEXIST),
            Error::NotFound { .. } => Some(libc::ENOENT),
            Error::PermissionDenied { .. } => Some(libc::EPERM),
            Error::Unavailable { source, .. } | Error::Kernel { source, .. } => {
                source.raw_os_error()
            }
            Error::Socket(e) => e.raw_os_error(),
            Error::Invalid(_) => None,
        }
    }
}
