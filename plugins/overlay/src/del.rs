//! DEL: the attachment's record says what ADD delegated; the same config goes to the bridge's
//! DEL, then the record goes, then (the network's last) the masquerading. Needs neither the
//! agent nor its lease: a host whose agent stopped (or never ran again after a reboot of the
//! agent alone) still cleans up.
//!
//! ```text
//!  no usable "network"  -> success (ADD refused it: nothing was made)
//!  no record            -> success (never added, or already deleted)
//!  record -> bridge DEL (saved config + this request's prevResult) -> remove record
//!         -> no record left: masquerading removed under the exclusive lock
//! ```
//!
//! The record stays when the bridge's DEL fails, so a retried DEL (or GC) can still find it.

use cni::{Command, Error, Request};
use tether_overlay_state::NetworkDir;

use crate::config::Config;
use crate::state::{self, state_err};

pub fn del(req: &Request) -> Result<(), Error> {
    let conf = Config::parse(req)?;
    let Some(network) = conf.usable_network() else {
        tracing::warn!(network = ?conf.network, "DEL without a usable \"network\": nothing of it can exist");
        return Ok(());
    };
    let dir = NetworkDir::default_for(network).map_err(state_err)?;
    let (cid, ifname) = (req.container_id.as_str(), req.ifname.as_str());
    let Some(rec) = dir.read_attachment(cid, ifname).map_err(state_err)? else {
        tracing::debug!("DEL: no attachment record, nothing to do");
        return Ok(());
    };
    let mut delegate = state::delegate_of(&dir, cid, ifname, &rec)?;
    if let Some(prev) = req.raw.get("prevResult").filter(|p| p.is_object()) {
        delegate["prevResult"] = prev.clone();
    }
    cni::delegate::exec_with("bridge", req, Command::Del, delegate.to_string().as_bytes())?;
    tracing::debug!("phase: bridge DEL done");
    dir.remove_attachment(cid, ifname).map_err(state_err)?;
    state::release_masquerade_if_last(&dir, network)?;
    tracing::debug!("phase: record removed, network state checked");
    Ok(())
}
