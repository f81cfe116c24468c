//! GC: keep only the records of valid attachments; none left stops the server and removes the
//! directory. Without a valid-attachment list there is no basis to judge: nothing is removed.

use cni::{Attachment, Error, Request};

use crate::config::Config;
use crate::state;

pub fn gc(req: &Request, valid: &[Attachment]) -> Result<(), Error> {
    if req.valid_attachments()?.is_none() {
        return Ok(());
    }
    let conf = Config::parse(req)?;
    let dir = tether_dns_state::NetDir::new(&conf.data_dir, &conf.network);
    // Only a directory an ADD made (see del.rs).
    if conf.paths_invalid().is_some() || !dir.records().exists() {
        return Ok(());
    }
    let locked = state::lock(&conf)?;
    if !locked.dir.records().exists() {
        return Ok(());
    }
    let mut records = locked.records()?;
    let before = records.entries.len();
    records.entries.retain(|e| {
        valid
            .iter()
            .any(|a| a.container_id == e.container_id && a.ifname == e.ifname)
    });
    if records.entries.len() == before && !records.entries.is_empty() {
        return Ok(());
    }
    locked.store(&records)
}
