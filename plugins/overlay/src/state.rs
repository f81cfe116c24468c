//! The files this plugin reads and writes under the overlay's state directory, and the lock
//! that makes "the network's last attachment" safe to decide.
//!
//! ```text
//!  $TETHER_OVERLAY_DIR/<network>/            (tether-overlay-state's layout)
//!  ├── lease.json            read: no file, or its agent not running -> code 11
//!  ├── ipam/<network>/       host-local's store (the delegate's dataDir)
//!  └── attachments/<cid>@<ifname>.json       written by ADD before anything else, removed by DEL:
//!        { "owner": <CNI network name the runtime used>,
//!          "subnet": <host subnet of the lease ADD used; a restarted agent asks for it again>,
//!          "overlay": <overlay CIDR>,
//!          "ipMasq": bool, "delegate": <the bridge config ADD delegated with> }
//!
//!  attachments/.masquerade   stamp: the network's masquerading was ensured since the last
//!                            removal; later ADDs trust it instead of re-checking it (below)
//!
//!  $TETHER_LOCK_DIR/overlay-<network>.lock
//!      ADD: shared, from writing its record until its masquerading is ensured
//!      the last DEL / GC / failed ADD: exclusive, around "no record left" + masquerade removal
//! ```
//!
//! Why the lock is enough: a removal holds it exclusive, so it runs wholly before an ADD's span
//! (the ADD then ensures the chain again) or wholly after it (the removal then sees the ADD's
//! record and keeps the chain). It is not the bridge's `network-<net>.lock`: the bridge takes
//! that one itself inside our delegate calls.
//!
//! The stamp: the first ADD of a network on this host ensures the masquerade chain and leaves the
//! stamp; later ADDs skip the `iptables-restore` check (an exec costing about as much as the
//! whole overlay's overhead on an ADD), since only the removal under the exclusive lock deletes
//! the chain, and it deletes the stamp first. An ADD whose ensure failed leaves no stamp, so the
//! next ADD tries again. Rules flushed behind our back (a firewall reload) are reported by CHECK
//! and repaired by GC (`tether network prune`), which ensures the chain while records remain.

use cni::{Error, ErrorCode};
use serde_json::{Value, json};
use tether_kit::errors::nf;
use tether_lock::FileLock;
use tether_overlay_state::{HostLease, NetworkDir};

/// tether-overlay-state's errors as the kit's kinds, so that their codes come from its one map:
/// a name that cannot be a directory is the config's (7), one that cannot be a record file the
/// environment's (4: the container id or ifname), a file that cannot be read or parsed 5.
pub fn state_err(e: tether_overlay_state::Error) -> Error {
    use tether_overlay_state::Error as S;
    let kit = match e {
        S::BadName(_) => tether_kit::Error::Config(e.to_string()),
        S::BadAttachment(_) => tether_kit::Error::Args(e.to_string()),
        S::Io { path, source } => tether_kit::Error::Io {
            what: path.display().to_string(),
            source,
        },
        S::Parse { path, source } => tether_kit::Error::Io {
            what: format!("{}: not a valid overlay state file", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, source),
        },
    };
    kit.into()
}

/// The lease ADD may use: present, held by a running agent, and consistent.
pub fn usable_lease(dir: &NetworkDir, network: &str) -> Result<HostLease, Error> {
    let try_again = |why: String| -> Error { tether_kit::Error::TryAgain(why).into() };
    let lease = dir.read_lease().map_err(state_err)?.ok_or_else(|| {
        try_again(format!(
            "overlay network {network} has no lease of a host subnet yet ({} is missing): start `tether overlay agent {network} ...` on this host, or wait until it has leased one",
            dir.lease_file().display()
        ))
    })?;
    if !agent_running(lease.agent_pid) {
        return Err(try_again(format!(
            "the overlay agent of {network} (pid {}, in {}) is not running: its lease may be gone from the cluster; restart `tether overlay agent {network} ...`",
            lease.agent_pid,
            dir.lease_file().display()
        )));
    }
    crate::plan::check_lease(network, &lease).map_err(|why| {
        try_again(format!(
            "the lease in {} is not usable: {why}",
            dir.lease_file().display()
        ))
    })?;
    Ok(lease)
}

/// `kill(pid, 0)`: only "no such process" means gone (EPERM is a live process of another user).
fn agent_running(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 delivers nothing; it only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// What ADD records for one attachment.
pub fn record(owner: &str, lease: &HostLease, ip_masq: bool, delegate: &Value) -> Value {
    json!({
        "owner": owner,
        "subnet": lease.subnet.to_string(),
        "overlay": lease.overlay.to_string(),
        "ipMasq": ip_masq,
        "delegate": delegate,
    })
}

/// A record's delegate config and owner, or an error naming the file.
pub fn delegate_of(dir: &NetworkDir, cid: &str, ifname: &str, rec: &Value) -> Result<Value, Error> {
    rec.get("delegate")
        .filter(|d| d.is_object())
        .cloned()
        .ok_or_else(|| {
            let file = dir
                .attachment_file(cid, ifname)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            tether_kit::errors::io(file)(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not an overlay attachment record (no \"delegate\")",
            ))
        })
}

#[derive(Clone, Copy)]
pub enum Mode {
    Shared,
    Exclusive,
}

pub fn lock(network: &str, mode: Mode) -> Result<FileLock, Error> {
    let name = format!("overlay-{network}.lock");
    match mode {
        Mode::Shared => FileLock::acquire_shared(&name),
        Mode::Exclusive => FileLock::acquire(&name),
    }
    .map_err(|e| Error::new(ErrorCode::IoFailure, e.to_string()))
}

fn stamp(dir: &NetworkDir) -> std::path::PathBuf {
    dir.attachments_dir().join(".masquerade")
}

/// Whether an earlier ADD ensured the masquerading since the last removal.
pub fn masquerade_stamped(dir: &NetworkDir) -> bool {
    stamp(dir).exists()
}

/// Records that the masquerading is in place (after a successful ensure).
pub fn stamp_masquerade(dir: &NetworkDir) -> Result<(), Error> {
    std::fs::write(stamp(dir), b"").map_err(tether_kit::errors::io(format!(
        "write {}",
        stamp(dir).display()
    )))
}

/// After an attachment's record is gone: when no record of the network is left, its
/// masquerading goes (decided again under the exclusive lock, see above).
pub fn release_masquerade_if_last(dir: &NetworkDir, network: &str) -> Result<(), Error> {
    if !dir.attachments().map_err(state_err)?.is_empty() {
        return Ok(());
    }
    let _lock = lock(network, Mode::Exclusive)?;
    if !dir.attachments().map_err(state_err)?.is_empty() {
        tracing::debug!(network, "an ADD came in meanwhile: masquerading kept");
        return Ok(());
    }
    // The stamp first: a removal that fails half-way leaves the next ADD to check again.
    match std::fs::remove_file(stamp(dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(tether_kit::errors::io(format!(
                "remove {}",
                stamp(dir).display()
            ))(e));
        }
        _ => {}
    }
    match tether_netfilter::select().masquerade_remove(network) {
        Ok(n) => {
            tracing::debug!(network, chains = n, "last attachment: masquerading removed");
            Ok(())
        }
        // No iptables on this host: then there is nothing to remove either.
        Err(e @ tether_netfilter::Error::Spawn { .. }) => {
            tracing::debug!(error = %e, "no masquerading to remove");
            Ok(())
        }
        Err(e) => Err(nf(format!("remove the masquerading of {network}"))(e)),
    }
}
