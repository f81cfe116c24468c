//! GC (CNI 1.1.0): the runtime's valid list speaks for the attachments it made (the record's
//! `owner` is the CNI network name it called us with); other runtimes' attachments of the same
//! overlay on this host are never stale to it.
//!
//! ```text
//! 1. records owned by this network name whose attachment is not in the valid list
//!      -> bridge DEL with the saved config, record removed
//! 2. bridge GC (its veths, host-local's leases) with every attachment that still has a record
//!      as the valid list, with the config of the current lease (or of any record)
//! 3. no record left -> masquerading removed (as the last DEL); records left, one of them with
//!    ipMasq -> masquerading ensured (repairs a flushed nat table, see state.rs)
//! ```
//!
//! Every step runs; the first failure is reported.

use cni::{Attachment, Command, Error, Request};
use serde_json::json;
use tether_overlay_state::NetworkDir;

use crate::config::Config;
use crate::plan::{Passthrough, delegate_conf};
use crate::state::{self, state_err};

pub fn gc(req: &Request, valid: &[Attachment]) -> Result<(), Error> {
    let conf = Config::parse(req)?;
    let Some(network) = conf.usable_network() else {
        tracing::warn!(network = ?conf.network, "GC without a usable \"network\": nothing to collect");
        return Ok(());
    };
    let dir = NetworkDir::default_for(network).map_err(state_err)?;
    let mut errors: Vec<Error> = Vec::new();
    let mut keep = |r: Result<(), Error>| {
        if let Err(e) = r {
            tracing::warn!(error = %e, "GC step failed");
            errors.push(e);
        }
    };

    let records = dir.attachments().map_err(state_err)?;
    let mut any_delegate = None;
    for (cid, ifname) in &records {
        let rec = match dir.read_attachment(cid, ifname).map_err(state_err) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                keep(Err(e));
                continue;
            }
        };
        let listed = valid
            .iter()
            .any(|a| &a.container_id == cid && &a.ifname == ifname);
        let ours = rec.get("owner").and_then(|o| o.as_str()) == Some(req.conf.name.as_str());
        let delegate = match state::delegate_of(&dir, cid, ifname, &rec) {
            Ok(d) => d,
            Err(e) => {
                keep(Err(e));
                continue;
            }
        };
        if ours && !listed {
            tracing::info!(%cid, %ifname, "GC: stale overlay attachment");
            keep(del_stale(req, &dir, cid, ifname, &delegate));
        } else {
            any_delegate.get_or_insert(delegate);
        }
    }

    // The delegate's GC config: the current lease's, else any record's (the agent may be gone).
    let pass = Passthrough::from_raw(&req.raw, req.version());
    let delegate = match state::usable_lease(&dir, network) {
        Ok(lease) => conf
            .mtu_for(&lease)
            .ok()
            .map(|mtu| delegate_conf(network, &conf, &lease, mtu, &dir.ipam_dir(), &pass)),
        Err(_) => any_delegate,
    };
    if let Some(mut delegate) = delegate {
        let remaining: Vec<_> = dir
            .attachments()
            .map_err(state_err)?
            .into_iter()
            .map(|(c, i)| json!({"containerID": c, "ifname": i}))
            .collect();
        delegate["cniVersion"] = json!(req.version());
        delegate["cni.dev/valid-attachments"] = json!(remaining);
        keep(
            cni::delegate::exec_with("bridge", req, Command::Gc, delegate.to_string().as_bytes())
                .map(drop),
        );
    }
    keep(state::release_masquerade_if_last(&dir, network));
    keep(repair_masquerade(&dir, network));
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// While records remain and one of them masquerades: the chain, ensured (under the shared lock,
/// as an ADD), and the stamp.
fn repair_masquerade(dir: &NetworkDir, network: &str) -> Result<(), Error> {
    let _lock = state::lock(network, state::Mode::Shared)?;
    let mut overlay = None;
    for (cid, ifname) in dir.attachments().map_err(state_err)? {
        let Some(rec) = dir.read_attachment(&cid, &ifname).map_err(state_err)? else {
            continue;
        };
        if rec.get("ipMasq").and_then(|v| v.as_bool()) == Some(true) {
            overlay = rec
                .get("overlay")
                .and_then(|o| o.as_str())
                .and_then(|o| o.parse::<ipnetwork::IpNetwork>().ok());
            break;
        }
    }
    let Some(overlay) = overlay else {
        return Ok(());
    };
    tether_netfilter::select()
        .masquerade_ensure(network, &[overlay], false)
        .map_err(tether_kit::errors::nf(format!(
            "repair the masquerading of {network}"
        )))?;
    state::stamp_masquerade(dir)
}

/// A stale attachment's DEL, as the runtime would have sent it: `CNI_CONTAINERID` and
/// `CNI_IFNAME` of the record (GC's request has neither).
fn del_stale(
    req: &Request,
    dir: &NetworkDir,
    cid: &str,
    ifname: &str,
    delegate: &serde_json::Value,
) -> Result<(), Error> {
    let mut r = req.clone();
    r.container_id = cid.to_string();
    r.ifname = ifname.to_string();
    r.netns = None;
    cni::delegate::exec_with("bridge", &r, Command::Del, delegate.to_string().as_bytes())?;
    dir.remove_attachment(cid, ifname).map_err(state_err)
}
