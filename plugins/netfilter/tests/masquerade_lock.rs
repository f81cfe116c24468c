//! ipMasq creates a network's chain with `-N` only while holding the netfilter lock.
//!
//! iptables-nft-restore reads the table when it commits and its commit still succeeds when
//! another restore created the chain in between, so two unlocked creations can both commit (a
//! second jump, the rules twice). That race is a fraction of a millisecond wide, too narrow to
//! hit on demand, so this test checks the cause instead: a wrapper around the restore tool
//! notes, for each batch with a `-N`, whether the lock file was held while it ran.
//!
//! Its own test binary (one process, one test) because it points `TETHER_LOCK_DIR` at a
//! directory of its own, so no other test's lock can make an unlocked restore look locked.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use tether_netfilter::lock::{LOCK_DIR_ENV, NETFILTER_LOCK};
use tether_netfilter::{Tools, masquerade_check, masquerade_ensure};

/// A stand-in for `real` that appends `locked` or `unlocked` to `log` for each batch holding a
/// `-N` line (whether `lock` could be taken at that moment), then runs `real` on the batch.
fn lock_noting_restore(dir: &Path, real: &Path, lock: &Path, log: &Path) -> PathBuf {
    let path = dir.join("restore");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             batch=$(cat)\n\
             if printf '%s\\n' \"$batch\" | grep -q '^-N '; then\n\
               if flock -n {lock} true; then echo unlocked; else echo locked; fi >> {log}\n\
             fi\n\
             printf '%s\\n' \"$batch\" | exec {real} \"$@\"\n",
            lock = lock.display(),
            log = log.display(),
            real = real.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn chains_are_created_only_under_the_netfilter_lock() {
    let locks = tempfile::tempdir().unwrap();
    // SAFETY: this binary's only test, and no thread has started yet.
    unsafe { std::env::set_var(LOCK_DIR_ENV, locks.path()) };
    // The lock file exists before the first creation, so `flock -n` finds the one we hold.
    drop(tether_netfilter::lock::FileLock::acquire(NETFILTER_LOCK).unwrap());
    let lock = locks.path().join(NETFILTER_LOCK);
    for (backend, tools) in backends() {
        let ns = ns();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let noted = Tools {
            v4_restore: lock_noting_restore(dir.path(), &tools.v4_restore, &lock, &log),
            ..tools.clone()
        };
        let nf = nf(&ns, &noted);
        // Said to be new: the `-N` batch is the first restore.
        masquerade_ensure(&nf, "first", &[net("10.88.0.5/16")], true).unwrap();
        // Not said to be new: the checks fail, a save finds the chain missing, `-N` creates it.
        masquerade_ensure(&nf, "second", &[net("10.89.0.5/16")], false).unwrap();
        // The wrapper saw the batches (a test that cannot fail is no test), all locked.
        let noted = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(noted, "locked\nlocked\n", "{backend}");
        masquerade_check(&nf, "first", &[net("10.88.0.6/16")]).unwrap();
        masquerade_check(&nf, "second", &[net("10.89.0.6/16")]).unwrap();
    }
}
