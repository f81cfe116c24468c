//! The bridge plugin's host-wide locks, `flock`s on files in Tether's lock directory
//! (`/run/tether/locks`, or `$TETHER_LOCK_DIR`; the helper every Tether plugin uses). Each is
//! released when its guard is dropped or when the process dies, so a killed plugin never leaves
//! anything locked.
//!
//! ```text
//! network-<net>.lock    ADD: shared, from before its preflight checks until its veth
//!                       exists and the masquerade chains are ensured.
//!                       last DEL / GC: exclusive, around "no veth of <net> is left"
//!                       and the removal of <net>'s masquerade chains.
//! ports-<bridge>.lock   ADD: shared, over the same span (it covers the bridge's new port).
//!                       last DEL / GC: exclusive, around "the bridge has no port" and
//!                       its deletion.
//! bridge-<bridge>.lock  ADD: exclusive, around creating the bridge and its gateway
//!                       addresses (taken inside the two above).
//! ```
//!
//! Why this is enough for a concurrent ADD never to lose its masquerading (or its bridge): an
//! ADD's veth appears, and its `masquerade_ensure` completes, while it holds the network lock
//! shared. A removal holds it exclusive, so it runs either wholly before such an ADD's span (the
//! ADD then finds the chains gone and creates them again) or wholly after it (the removal then
//! sees the ADD's veth, carrying the network in its alias, and keeps everything). A failed ADD
//! releases its lock after its rollback deleted its veth. Likewise the bridge: an ADD holds
//! the bridge's port lock shared from before preflight looks the bridge up until its veth is a
//! port of it, and the deletion needs it exclusive and a bridge without ports. Shared holders do not
//! exclude each other, so parallel ADDs of one network still run side by side; the DELs that are
//! not the last take no lock at all (see del.rs).
//!
//! Always taken in the order network, ports, bridge, so they cannot deadlock. Another runtime
//! or the reference plugin adding a port to our bridge takes none of them: that port could
//! appear between our check and our deletion, a race we accept (their ADD then fails cleanly).

use cni::{Error, ErrorCode};
use tether_lock::FileLock;

use crate::names::lock_file_name;

/// Blocks until this process holds the lock for `bridge`'s creation and addresses.
pub fn lock_bridge(bridge: &str) -> Result<FileLock, Error> {
    acquire(&lock_file_name(bridge), Mode::Exclusive)
}

/// Shared (ADD) or exclusive (the removal of what the network or bridge leaves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// The lock on `network`'s shared state (its masquerade chains).
pub fn lock_network(network: &str, mode: Mode) -> Result<FileLock, Error> {
    acquire(&format!("network-{network}.lock"), mode)
}

/// The lock on `bridge`'s ports (whether it may be deleted).
pub fn lock_ports(bridge: &str, mode: Mode) -> Result<FileLock, Error> {
    acquire(&format!("ports-{bridge}.lock"), mode)
}

fn acquire(name: &str, mode: Mode) -> Result<FileLock, Error> {
    match mode {
        Mode::Shared => FileLock::acquire_shared(name),
        Mode::Exclusive => FileLock::acquire(name),
    }
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

    #[test]
    fn shared_holders_coexist_and_exclude_the_exclusive_one() {
        let net = format!("tstnet{}", std::process::id());
        let a = lock_network(&net, Mode::Shared).unwrap();
        // Would block forever if shared holders excluded each other.
        let b = lock_network(&net, Mode::Shared).unwrap();
        let path = tether_lock::lock_dir().join(format!("network-{net}.lock"));
        let probe = || {
            let f = std::fs::File::open(&path).unwrap();
            Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok()
        };
        assert!(!probe(), "exclusive taken beside shared holders");
        drop((a, b));
        assert!(probe(), "released on drop");
        let _ = std::fs::remove_file(&path);
    }
}
