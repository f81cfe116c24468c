//! DEL: remove the attachment's records; the network's last one stops the server and removes
//! the directory. Needs nothing but the config and the attachment's identity (no prevResult,
//! no netns, no running server), and succeeds when there is nothing to remove.

use cni::{Error, Request};

use crate::config::Config;
use crate::state;

pub fn del(req: &Request) -> Result<(), Error> {
    let conf = Config::parse(req)?;
    let dir = tether_dns_state::NetDir::new(&conf.data_dir, &conf.network);
    // Only a directory an ADD made: valid paths, and its records file there.
    if conf.paths_invalid().is_some() || !dir.records().exists() {
        return Ok(());
    }
    let locked = state::lock(&conf)?;
    if !locked.dir.records().exists() {
        return Ok(());
    }
    let mut records = locked.records()?;
    records.remove(&req.container_id, &req.ifname);
    locked.store(&records)
}
