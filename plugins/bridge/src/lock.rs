//! The per-bridge lock that serialises bridge creation and its gateway addresses, so that many
//! parallel ADDs on a fresh host neither race on `EEXIST` nor see a half-configured bridge.
//!
//! A [`FileLock`] on `bridge-<name>.lock` in Tether's lock directory (`/run/tether/locks`, or
//! `$TETHER_LOCK_DIR`), the helper every Tether plugin uses.

use cni::{Error, ErrorCode};
use tether_lock::FileLock;

use crate::names::lock_file_name;

/// Blocks until this process holds the lock for `bridge`; released when the guard is dropped
/// (or when the process dies, so a killed ADD never leaves the bridge locked).
pub fn lock_bridge(bridge: &str) -> Result<FileLock, Error> {
    FileLock::acquire(&lock_file_name(bridge))
        .map_err(|e| Error::new(ErrorCode::IoFailure, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{Flock, FlockArg};

    #[test]
    fn locks_the_bridge_file_in_the_shared_directory() {
        let bridge = format!("tstlk{}", std::process::id() % 100_000);
        let path = tether_lock::lock_dir().join(format!("bridge-{bridge}.lock"));
        let held = lock_bridge(&bridge).unwrap();
        let other = std::fs::File::open(&path).unwrap();
        let other = match Flock::lock(other, FlockArg::LockExclusiveNonblock) {
            Ok(_) => panic!("{} was not locked", path.display()),
            Err((f, errno)) => {
                assert_eq!(errno, nix::errno::Errno::EWOULDBLOCK);
                f
            }
        };
        drop(held);
        Flock::lock(other, FlockArg::LockExclusiveNonblock).expect("released on drop");
        let _ = std::fs::remove_file(&path);
    }
}
