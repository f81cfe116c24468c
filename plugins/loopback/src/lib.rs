//! `loopback`: brings `lo` up in `CNI_NETNS`, exactly as the reference plugin does
//! (cni-checklist 2.4). containerd and CRI-O run it for every pod, some in the 0.1.0/0.2.0 result
//! format, so it answers in every spec version.
//!
//! - ADD: `lo` up; every address on it must be a loopback address. The result is `prevResult`
//!   unchanged when there is one, else `lo` (mac all zeros, sandbox = `CNI_NETNS`) with its first
//!   IPv4 and first IPv6 address (`127.0.0.1/8`, `::1/128` when IPv6 is on), `interface: 0`.
//! - DEL: `lo` down; success when `CNI_NETNS` is empty or no longer exists.
//! - CHECK: `lo` must be up.
//!
//! `CNI_IFNAME` is ignored: this plugin only ever works on `lo`. The `lo` helpers live in the
//! plugin kit ([`tether_kit::lo`]), which `none` shares.

use cni::{CniResult, Error, Plugin, Request};
use tether_kit::lo;

pub struct Loopback;

impl Plugin for Loopback {
    fn name(&self) -> &'static str {
        "loopback"
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        lo::add(req)
    }

    fn del(&self, req: &Request) -> Result<(), Error> {
        let Some(netns) = req.netns.as_deref() else {
            tracing::debug!("no CNI_NETNS: nothing to do");
            return Ok(());
        };
        lo::lo_down(netns)
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        lo::check(req)
    }
}
