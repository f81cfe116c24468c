//! ADD: record the container's names and addresses, make sure the network's server runs and
//! serves them, return prevResult with `dns` pointing at the gateway.
//!
//! All or nothing: the undo stack restores the records file (or removes the directory this ADD
//! created, with a server it started) when a later step fails.

use cni::{CniResult, Error, Request};
use tether_kit::RequestExt;

use crate::config::{self, Config};
use crate::undo::Undo;
use crate::{plan, server, state};

pub fn add(req: &Request) -> Result<CniResult, Error> {
    let conf = Config::validate(req)?;
    let prev = req.prev_result_required(
        "dnsname must be chained after a plugin that sets an address (bridge)",
    )?;
    let names = config::names(req, &conf.network)?;
    let plan = plan::plan(&conf, names, &req.container_id, &req.ifname, prev)?;
    let bin = server::binary(req)?;
    tracing::debug!(names = ?plan.entry.names, "phase: plan made");

    let locked = state::lock(&conf)?;
    let dir = locked.dir.clone();
    let mut undo = Undo::new();
    let created = !dir.path().exists();
    std::fs::create_dir_all(dir.path()).map_err(tether_kit::errors::io(format!(
        "create {}",
        dir.path().display()
    )))?;
    if created {
        let d = dir.clone();
        undo.push("the network's dns directory", move || {
            server::stop(&d);
            d.remove().map_err(|e| e.to_string())
        });
    }
    let mut records = locked.records()?;
    let before = records.clone();
    records.upsert(plan.entry.clone());
    locked.write_records(&records)?;
    if !created {
        let l = &locked;
        undo.push("the records", move || {
            l.write_records(&before).map_err(|e| e.msg)?;
            if server::running(&l.dir).is_some() {
                server::control(&l.dir, "reload")?;
            }
            Ok(())
        });
    }
    tracing::debug!("phase: records written");

    server::ensure(&dir, &plan.server, &bin)?;
    tracing::debug!("phase: server serves the records");
    undo.commit();
    Ok(plan.result)
}
