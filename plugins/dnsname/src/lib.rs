//! The `dnsname` CNI plugin: containers on a network find each other by name. Chained after
//! `bridge` (or any plugin whose result has addresses and a gateway), it records the
//! container's name, aliases and addresses in the network's state directory and makes sure the
//! network's DNS server (`tether-dns`, a separate long-running binary on hickory) runs on the
//! gateway addresses and serves them; the result is prevResult with `dns` pointing at the
//! gateway and searching `domainName`.
//!
//! ```text
//!  runtime ── ADD ──► dnsname (this, short-lived, no DNS library)
//!                       │ lock <dataDir>/<net>.lock
//!                       │ records.json += {cid, ifname, names, ips}   (atomic rename)
//!                       │ server running with this server.json?  ── yes ─► control.sock "reload"
//!                       │                                         └─ no ──► spawn tether-dns
//!                       ▼                                                   (setsid, pid file)
//!                     result: prevResult + dns {nameservers: [gw], search: [domainName]}
//! ```
//!
//! A drop-in for containers/dnsname's keys (`domainName`, `capabilities.aliases`,
//! `runtimeConfig.aliases`) and its name source (`K8S_POD_NAME` in `CNI_ARGS`, which Podman
//! sets to the container's name); see `config` for the keys and name sources, `server` for the
//! supervision, `tether-dns-state` for the files. Differences from dnsname: no dnsmasq (our own
//! server, which answers NXDOMAIN for unknown names in the domain and forwards the rest), names
//! must be DNS labels (dnsname writes anything into a hosts file), and ADD returns only once
//! the server serves the new name.

mod add;
mod check;
pub mod config;
mod del;
mod gc;
pub mod plan;
pub mod server;
mod state;

use cni::{Attachment, CniResult, Error, Request};
use tether_kit::undo;

pub use config::Config;

/// The plugin, for `cni::run`.
pub struct Dnsname;

impl cni::Plugin for Dnsname {
    fn name(&self) -> &'static str {
        "dnsname"
    }

    fn known_args(&self) -> &'static [&'static str] {
        &[
            "K8S_POD_NAME",
            "K8S_POD_NAMESPACE",
            "K8S_POD_INFRA_CONTAINER_ID",
            "K8S_POD_UID",
        ]
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

    /// Ready when the server binary is there to start.
    fn status(&self, req: &Request) -> Result<(), Error> {
        server::binary(req).map(|_| ())
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), Error> {
        gc::gc(req, valid)
    }
}
