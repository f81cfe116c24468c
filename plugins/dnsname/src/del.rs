//! DEL: remove the attachment's records; the network's last one stops the server and removes
//! the directory. Needs nothing but the config and the attachment's identity (no prevResult,
//! no netns, no running server), and succeeds when there is nothing to remove.

use cni::{Error, Request};

use crate::config::Config;
use crate::state;

pub fn del(req: &Request) -> Result<(), Error> {
    let conf = Config::parse(req)?;
    let Some((locked, mut records)) = state::lock_existing(&conf)? else {
        return Ok(());
    };
    records.remove(&req.container_id, &req.ifname);
    locked.store(&records)
}
