//! The per-bridge lock that serialises bridge creation and its gateway addresses, so that many
//! parallel ADDs on a fresh host neither race on `EEXIST` nor see a half-configured bridge.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use cni::{Error, ErrorCode};
use nix::fcntl::{Flock, FlockArg};

use crate::names::lock_file_name;

/// Where lock files live. `/run` is a tmpfs, so locks never outlive a reboot; the directory is
/// created on demand because a fresh host (or a test's mount namespace) may not have it.
pub const LOCK_DIR: &str = "/run/tether/locks";

/// Environment override of [`LOCK_DIR`], for hosts where `/run` is not writable.
pub const LOCK_DIR_ENV: &str = "TETHER_LOCK_DIR";

/// An exclusive `flock` on the bridge's lock file, released on drop (or when the process dies,
/// so a killed ADD never leaves the bridge locked).
pub struct BridgeLock {
    _lock: Flock<File>,
}

pub fn lock_dir() -> PathBuf {
    std::env::var_os(LOCK_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(LOCK_DIR))
}

impl BridgeLock {
    /// Blocks until this process holds the lock for `bridge`.
    pub fn acquire(dir: &Path, bridge: &str) -> Result<BridgeLock, Error> {
        let io = |what: String| {
            move |e: std::io::Error| Error::new(ErrorCode::IoFailure, format!("{what}: {e}"))
        };
        std::fs::create_dir_all(dir)
            .map_err(io(format!("create lock directory {}", dir.display())))?;
        let path = dir.join(lock_file_name(bridge));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("open lock file {}", path.display())))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| {
            Error::new(
                ErrorCode::IoFailure,
                format!("lock {}: {errno}", path.display()),
            )
        })?;
        Ok(BridgeLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn excludes_other_holders_and_creates_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let inside = AtomicUsize::new(0);
        let max = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    // flock locks belong to the open file description, so separate opens on
                    // separate threads exclude each other like separate processes do.
                    let _l = BridgeLock::acquire(&dir, "br0").unwrap();
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    inside.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(max.load(Ordering::SeqCst), 1);
        assert!(dir.join("bridge-br0.lock").exists());
    }
}
