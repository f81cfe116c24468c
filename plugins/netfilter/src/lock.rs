//! The host-wide locks, re-exported from `tether-lock` (the crate below this one, so that the
//! bridge and every plugin take them without going through the firewall library).

pub use tether_lock::{
    Error as LockError, FileLock, LOCK_DIR, LOCK_DIR_ENV, NETFILTER_LOCK, lock_dir, netfilter_lock,
};

use crate::Error;

impl From<LockError> for Error {
    fn from(e: LockError) -> Error {
        match e {
            LockError::InvalidName { name } => Error::Invalid {
                what: "lock file name",
                value: name,
                reason: "must be one non-empty file name".into(),
            },
            LockError::Io {
                action,
                path,
                source,
            } => Error::Lock {
                action,
                path,
                source,
            },
        }
    }
}
