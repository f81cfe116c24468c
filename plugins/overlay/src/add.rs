//! ADD: everything that can refuse first, then the record, the delegate and the masquerading,
//! each undone if a later step fails.
//!
//! ```text
//!  config (7, 2) ─► lease: present, agent running, consistent (11) ─► mtu ≤ lease's (7)
//!  ─► delegate config (plan.rs)
//!  ─► overlay-<net>.lock shared
//!       record attachments/<cid>@<ifname>.json          undo: remove it
//!       ┌ thread: masquerade_ensure(net, overlay CIDR)   (nothing to undo: shared, see state.rs;
//!       │         skipped when an earlier ADD stamped it)  stamp after it succeeded
//!       └ bridge ADD (exec, which execs host-local)      undo: bridge DEL
//!       every address of the result inside the subnet? (11 otherwise: never a wrong subnet)
//!  ─► unlock; a failed ADD then removes the masquerading if no record is left
//! ```
//!
//! The record comes first so that a plugin killed mid-ADD leaves something DEL (or GC) can find;
//! the masquerading runs beside the bridge's ADD because it needs nothing from it (it is keyed on
//! the overlay, not on the container's address), so it costs no time of its own.

use cni::{CniResult, Command, Error, Request};
use tether_kit::Undo;
use tether_kit::errors::nf;
use tether_overlay_state::NetworkDir;

use crate::config::Config;
use crate::plan::{Passthrough, delegate_conf, masq_key, outside_subnet};
use crate::state::{self, Mode, state_err};

pub fn add(req: &Request) -> Result<CniResult, Error> {
    let conf = Config::parse(req)?;
    let network = conf.validate()?;
    let dir = NetworkDir::default_for(network).map_err(state_err)?;
    let lease = state::usable_lease(&dir, network)?;
    let mtu = conf.mtu_for(&lease)?;
    let pass = Passthrough::from_raw(&req.raw, req.version());
    let delegate = delegate_conf(network, &conf, &lease, mtu, &dir.ipam_dir(), &pass);
    tracing::debug!(subnet = %lease.subnet, vni = lease.vni, "phase: lease read, delegate planned");

    let added = {
        let _lock = state::lock(network, Mode::Shared)?;
        attach(req, &conf, network, &dir, &lease, &delegate)
    };
    if added.is_err()
        && let Err(e) = state::release_masquerade_if_last(&dir, network)
    {
        tracing::warn!(error = %e, "removing the masquerading after a failed ADD");
    }
    added
}

fn attach(
    req: &Request,
    conf: &Config,
    network: &str,
    dir: &NetworkDir,
    lease: &tether_overlay_state::HostLease,
    delegate: &serde_json::Value,
) -> Result<CniResult, Error> {
    let stdin = delegate.to_string().into_bytes();
    let mut undo = Undo::new();
    let (cid, ifname) = (req.container_id.as_str(), req.ifname.as_str());
    if dir
        .read_attachment(cid, ifname)
        .map_err(state_err)?
        .is_some()
    {
        return Err(Error::invalid_env(format!(
            "container {cid} interface {ifname} is already attached to overlay {network}: DEL it first"
        )));
    }
    let rec = state::record(&req.conf.name, lease, conf.ip_masq, delegate);
    dir.write_attachment(cid, ifname, &rec).map_err(state_err)?;
    undo.push("remove the attachment record", || {
        dir.remove_attachment(cid, ifname)
            .map_err(|e| e.to_string())
    });
    tracing::debug!("phase: attachment recorded");

    let result = std::thread::scope(|s| {
        let masq = (conf.ip_masq && !state::masquerade_stamped(dir)).then(|| {
            s.spawn(|| {
                tether_netfilter::select_for(conf.firewall).masquerade_ensure(
                    network,
                    &[masq_key(lease)],
                    false,
                )
            })
        });
        let added = cni::delegate::exec_with("bridge", req, Command::Add, &stdin);
        if let Ok(Some(_)) = &added {
            let stdin = &stdin[..];
            undo.push("bridge DEL", move || {
                cni::delegate::exec_with("bridge", req, Command::Del, stdin)
                    .map(drop)
                    .map_err(|e| e.to_string())
            });
        }
        let masq = masq.map(|h| h.join().expect("the masquerade worker panicked"));
        // The delegate's error first: it is what went wrong for this container.
        let result = added?.ok_or_else(|| Error::internal("bridge returned no result on ADD"))?;
        tracing::debug!("phase: bridge ADD done");
        if let Some(m) = masq {
            m.map_err(nf("set up masquerading of traffic leaving the overlay"))?;
            state::stamp_masquerade(dir)?;
            tracing::debug!("phase: masquerading ready");
        }
        Ok::<_, Error>(result)
    })?;

    let ips: Vec<_> = result.ips.iter().map(|i| i.address.ip()).collect();
    if let Some(ip) = outside_subnet(&ips, lease.subnet) {
        return Err(tether_kit::Error::TryAgain(format!(
            "the delegate gave {ip}, outside this host's subnet {} of overlay {network}: refused (the lease changed?)",
            lease.subnet
        ))
        .into());
    }
    undo.commit();
    tracing::debug!("phase: result checked");
    Ok(result)
}
