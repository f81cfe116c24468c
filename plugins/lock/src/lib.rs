//! Host-wide file locks shared by Tether's plugins (`flock` on files in one directory).
//!
//! The lowest floor of the plugin wing: it depends on nothing of ours, so that the bridge, the
//! netfilter library and every plugin take the same locks without borrowing them from each
//! other.
//!
//! - [`netfilter_lock`]: held from an `iptables-save` to the `iptables-restore` planned from it.
//!   A restore is atomic, but a plan made from an earlier save is not: two plugins adding the
//!   same missing shared jump at once would both add it, two containers claiming one host port
//!   at once would both pass the conflict check. The reference plugins and other tools do not
//!   take it; stale batches from their changes are re-planned (see `tether_netfilter::sweep`).
//! - Per-object locks, such as the bridge plugin's per-bridge lock, via [`FileLock::acquire`].

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Where lock files live. `/run` is a tmpfs, so locks never outlive a reboot; the directory is
/// created on demand because a fresh host (or a test's mount namespace) may not have it.
pub const LOCK_DIR: &str = "/run/tether/locks";

/// Environment override of [`LOCK_DIR`], for hosts where `/run` is not writable.
pub const LOCK_DIR_ENV: &str = "TETHER_LOCK_DIR";

/// The lock file of [`netfilter_lock`], shared by every plugin that plans firewall changes
/// from a read of the current rules.
pub const NETFILTER_LOCK: &str = "netfilter.lock";

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lock name is not one file name.
    #[error("invalid lock file name {name:?}: must be one non-empty file name")]
    InvalidName { name: String },
    /// A step of taking the lock failed; `action` says which.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// [`LOCK_DIR`], or `$TETHER_LOCK_DIR` when set and not empty.
pub fn lock_dir() -> PathBuf {
    std::env::var_os(LOCK_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(LOCK_DIR))
}

/// A `flock` on a lock file (exclusive, or shared with [`FileLock::acquire_shared`]), released
/// on drop, or when the process dies, so a killed plugin never leaves anything locked.
#[derive(Debug)]
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Blocks until this process holds `<lock_dir()>/<name>`.
    pub fn acquire(name: &str) -> Result<FileLock, Error> {
        FileLock::acquire_in(&lock_dir(), name)
    }

    /// Blocks until this process holds `<lock_dir()>/<name>` shared: shared holders do not
    /// exclude each other, only an exclusive one ([`FileLock::acquire`]) waits for them all.
    pub fn acquire_shared(name: &str) -> Result<FileLock, Error> {
        FileLock::lock_in(&lock_dir(), name, FlockArg::LockShared)
    }

    /// Blocks until this process holds `<dir>/<name>`, creating both if needed. `name` is one
    /// file name: no `/`, not `.` or `..`.
    pub fn acquire_in(dir: &Path, name: &str) -> Result<FileLock, Error> {
        FileLock::lock_in(dir, name, FlockArg::LockExclusive)
    }

    fn lock_in(dir: &Path, name: &str, kind: FlockArg) -> Result<FileLock, Error> {
        if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
            return Err(Error::InvalidName {
                name: name.to_string(),
            });
        }
        let failed = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(failed("create lock directory", dir))?;
        let path = dir.join(name);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(failed("open lock file", &path))?;
        loop {
            match Flock::lock(file, kind) {
                Ok(lock) => return Ok(FileLock { _lock: lock }),
                // A signal interrupted the wait: wait again.
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => return Err(failed("lock", &path)(errno.into())),
            }
        }
    }
}

/// The host-wide netfilter plan-and-apply lock (see the crate docs). `None`, after a warning,
/// when it cannot be taken (say a read-only `/run`): the plugin then still works, only without
/// protection against races among Tether's plugins.
pub fn netfilter_lock() -> Option<FileLock> {
    FileLock::acquire(NETFILTER_LOCK)
        .inspect_err(|e| tracing::warn!(error = %e, "continuing without the netfilter lock"))
        .ok()
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
                    let _l = FileLock::acquire_in(&dir, "bridge-br0.lock").unwrap();
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

    #[test]
    fn different_names_do_not_exclude_each_other() {
        let tmp = tempfile::tempdir().unwrap();
        let _a = FileLock::acquire_in(tmp.path(), "a.lock").unwrap();
        // Would block forever if the names shared one lock.
        let _b = FileLock::acquire_in(tmp.path(), "b.lock").unwrap();
    }

    #[test]
    fn dropping_releases() {
        let tmp = tempfile::tempdir().unwrap();
        drop(FileLock::acquire_in(tmp.path(), "x.lock").unwrap());
        let f = File::open(tmp.path().join("x.lock")).unwrap();
        // Non-blocking: fails with EWOULDBLOCK if the dropped lock were still held.
        Flock::lock(f, FlockArg::LockExclusiveNonblock).expect("released on drop");
    }

    #[test]
    fn rejects_names_that_are_not_one_file() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", ".", "..", "a/b", "../x", "nul\0"] {
            assert!(
                matches!(
                    FileLock::acquire_in(tmp.path(), bad),
                    Err(Error::InvalidName { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn unusable_directory_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        std::fs::write(&file, "").unwrap();
        let e = FileLock::acquire_in(&file.join("sub"), "x.lock").unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(e.to_string().contains("create lock directory"), "{e}");
        assert!(e.to_string().contains("plain-file"), "{e}");
    }
}
