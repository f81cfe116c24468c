//! A host-wide file lock around read-modify-write of shared iptables chains.
//!
//! `iptables-restore` applies a batch atomically, but our batches are planned from an earlier
//! `iptables-save`: two plugins adding the same missing shared jump at once would both add it, and
//! two containers claiming the same host port at once would both pass the conflict check. Holding
//! this lock from the save to the restore makes each plan-and-apply a critical section among
//! Tether's plugins (the reference plugins and other tools are covered by retrying stale batches).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// The lock directory shared with the other plugins (`/run` is a tmpfs: no stale locks after a
/// reboot), overridable with `TETHER_LOCK_DIR` like theirs.
const LOCK_DIR: &str = "/run/tether/locks";
/// Shared by every Tether plugin that plans iptables changes from a save on this host.
const LOCK_FILE: &str = "netfilter.lock";

fn lock_path() -> PathBuf {
    std::env::var_os("TETHER_LOCK_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(LOCK_DIR))
        .join(LOCK_FILE)
}

/// Released when dropped (closing the file releases the `flock`).
pub struct Lock {
    _file: File,
}

/// Waits for the lock. `None` (after a warning) when the lock file cannot be opened, e.g. on a
/// read-only `/run`: the plugin then still works, only without protection against races.
pub fn acquire() -> Option<Lock> {
    let path = lock_path();
    let open = || -> std::io::Result<File> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
    };
    let file = match open() {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the netfilter lock; continuing without it");
            return None;
        }
    };
    loop {
        // SAFETY: flock on an fd we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Some(Lock { _file: file });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            tracing::warn!(error = %e, "flock on the netfilter lock failed; continuing without it");
            return None;
        }
    }
}
