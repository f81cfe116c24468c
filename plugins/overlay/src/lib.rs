//! The `overlay` CNI plugin: a container on a multi-host overlay network, on the host subnet the
//! overlay agent (`tether overlay agent`) leased for this host. It never talks to etcd and never
//! programs VXLAN itself: it reads the agent's lease file and delegates the attachment to our
//! `bridge` with `host-local` on that subnet, as the reference flannel plugin does.
//!
//! ```text
//!  runtime ──ADD──► overlay ── reads ──► <state>/<net>/lease.json      (agent; none: code 11)
//!                      │  writes ──► <state>/<net>/attachments/<cid>@<ifname>.json
//!                      ├── exec CNI_PATH/bridge (config from plan.rs) ──► host-local
//!                      │      bridge tob-<vni>, gateway, mtu, routes overlay + default
//!                      └── masquerade keyed on the overlay CIDR (thread, beside the bridge)
//!  runtime ──DEL──► overlay ── bridge DEL with the saved config, record removed, last one:
//!                              masquerading removed (no agent, no lease needed)
//! ```
//!
//! Modules: `config` (keys; parse for every command, validate for ADD), `plan` (pure: lease and
//! config to the delegate config), `state` (lease, records, the lock), `add`, `del`, `check`, `gc`.

mod add;
mod check;
pub mod config;
mod del;
#[cfg(test)]
mod fixtures;
mod gc;
pub mod plan;
pub mod state;

use cni::{Attachment, CniResult, Error, Request};
use tether_overlay_state::NetworkDir;

pub use config::Config;

/// The plugin, for `cni::run`.
pub struct Overlay;

impl cni::Plugin for Overlay {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn known_args(&self) -> &'static [&'static str] {
        // The delegate (bridge, host-local) reads them.
        &["MAC", "IP"]
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        add::add(req)
    }

    fn del(&self, req: &Request) -> Result<(), Error> {
        del::del(req)
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        check::check(req)
    }

    /// Ready when a running agent holds a usable lease (50 otherwise: ADD would answer 11).
    fn status(&self, req: &Request) -> Result<(), Error> {
        let conf = Config::parse(req)?;
        let network = conf.validate()?;
        let dir = NetworkDir::default_for(network).map_err(state::state_err)?;
        state::usable_lease(&dir, network).map(drop).map_err(|e| {
            cni::Error::from(tether_kit::Error::Exhausted(format!(
                "not ready: {}",
                e.msg
            )))
        })
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), Error> {
        gc::gc(req, valid)
    }
}
