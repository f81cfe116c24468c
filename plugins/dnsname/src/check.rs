//! CHECK: the attachment's record is what ADD would write, and the server runs and answers; a
//! server that died (a SIGKILL) is started again first, as the next ADD would.

use cni::{Error, Request};
use tether_kit::{Error as KitError, RequestExt};

use crate::config::{self, Config};
use crate::{plan, server, state};

pub fn check(req: &Request) -> Result<(), Error> {
    let conf = Config::validate(req)?;
    let prev = req.prev_result_required("dnsname CHECK needs prevResult")?;
    let names = config::names(req, &conf.network)?;
    let plan = plan::plan(&conf, names, &req.container_id, &req.ifname, prev)?;
    let bin = server::binary(req)?;
    let locked = state::lock(&conf)?;
    let records = locked.records()?;
    match records.get(&req.container_id, &req.ifname) {
        Some(e) if *e == plan.entry => {}
        Some(e) => {
            return Err(KitError::Mismatch(format!(
                "dns record of {}/{} is {:?} {:?}, expected {:?} {:?}",
                req.container_id, req.ifname, e.names, e.ips, plan.entry.names, plan.entry.ips
            ))
            .into());
        }
        None => {
            return Err(KitError::Mismatch(format!(
                "no dns record for {}/{} in network {:?}",
                req.container_id, req.ifname, conf.network
            ))
            .into());
        }
    }
    if server::running(&locked.dir).is_none() {
        tracing::warn!(
            "the DNS server of {:?} is not running: starting it",
            conf.network
        );
    }
    server::ensure(&locked.dir, &plan.server, &bin)?;
    server::control(&locked.dir, "ping")
        .map(|_| ())
        .map_err(|e| KitError::Server(format!("the DNS server does not answer: {e}")).into())
}
