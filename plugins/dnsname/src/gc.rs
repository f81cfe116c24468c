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
    // Only a directory an ADD made (see state::lock_existing).
    let Some((locked, mut records)) = state::lock_existing(&conf)? else {
        return Ok(());
    };
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
