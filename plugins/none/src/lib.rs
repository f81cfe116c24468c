//! `none`: Docker's `--net=none`. The container gets a fresh namespace with only `lo`, up.
//!
//! - ADD: `lo` up; the result reports only `lo`, exactly like `loopback` (or `prevResult`
//!   unchanged when chained after another plugin).
//! - DEL: nothing to undo: the namespace, and `lo` with it, dies with the container.
//! - CHECK: `lo` must be up.
//!
//! Real orchestrators never call CNI for `--net=none` (they just create the namespace); this
//! binary exists so that a CNI-only runtime, `tether` included, can treat every mode alike.

use cni::{CniResult, Error, Plugin, Request};
use tether_kit::lo;

pub struct NoNetwork;

impl Plugin for NoNetwork {
    fn name(&self) -> &'static str {
        "none"
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        lo::add(req)
    }

    fn del(&self, _req: &Request) -> Result<(), Error> {
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        lo::check(req)
    }
}
