//! CHECK: the bridge's CHECK with the saved config and the runtime's `prevResult`, then what
//! only the overlay knows: the lease still covers the addresses the container got (an agent
//! that came back with another subnet leaves this container unreachable from other hosts), and
//! the masquerading is in place.

use cni::{Command, Error, Request};
use tether_kit::RequestExt;
use tether_kit::errors::nf;
use tether_overlay_state::NetworkDir;

use crate::config::Config;
use crate::plan::{masq_key, outside_subnet};
use crate::state::{self, state_err};

pub fn check(req: &Request) -> Result<(), Error> {
    let conf = Config::parse(req)?;
    let network = conf.validate()?;
    let prev = req.prev_result_required("overlay CHECK needs the ADD result as prevResult")?;
    let dir = NetworkDir::default_for(network).map_err(state_err)?;
    let (cid, ifname) = (req.container_id.as_str(), req.ifname.as_str());
    let rec = dir
        .read_attachment(cid, ifname)
        .map_err(state_err)?
        .ok_or_else(|| {
            Error::from(tether_kit::Error::Mismatch(format!(
                "container {cid} interface {ifname} has no attachment record on overlay {network}: it was never added, or was deleted"
            )))
        })?;
    let mut delegate = state::delegate_of(&dir, cid, ifname, &rec)?;
    delegate["prevResult"] = req.raw["prevResult"].clone();
    cni::delegate::exec_with(
        "bridge",
        req,
        Command::Check,
        delegate.to_string().as_bytes(),
    )?;

    let lease = state::usable_lease(&dir, network)?;
    let ips: Vec<_> = prev.ips.iter().map(|i| i.address.ip()).collect();
    if let Some(ip) = outside_subnet(&ips, lease.subnet) {
        return Err(tether_kit::Error::Mismatch(format!(
            "the container's address {ip} is outside this host's current subnet {} of overlay {network}: the lease changed since ADD; re-create the container",
            lease.subnet
        ))
        .into());
    }
    if rec.get("ipMasq").and_then(|v| v.as_bool()).unwrap_or(false) {
        tether_netfilter::select_for(conf.firewall)
            .masquerade_check(network, &[masq_key(&lease)])
            .map_err(nf("check the masquerading of traffic leaving the overlay"))?;
    }
    Ok(())
}
