//! The network's state directory as the plugin uses it: its lock, its records file.

use cni::Error;
use tether_dns_state::{NetDir, Records};
use tether_kit::Error as KitError;
use tether_lock::FileLock;

use crate::config::Config;

/// A state file failure is a local file failure (code 5), also when the file is corrupt.
pub fn state_err(e: tether_dns_state::Error) -> Error {
    let what = e.to_string();
    let source = match e {
        tether_dns_state::Error::Io { source, .. } => source,
        tether_dns_state::Error::Parse { source, .. } => source.into(),
    };
    KitError::Io {
        what: format!("dns state: {what}"),
        source,
    }
    .into()
}

/// The network's directory, and its lock held: every command on a network runs under it, so
/// the records file and the server's start and stop are never raced.
pub struct Locked {
    pub dir: NetDir,
    _lock: FileLock,
}

pub fn lock(conf: &Config) -> Result<Locked, Error> {
    let dir = NetDir::new(&conf.data_dir, &conf.network);
    let lock = FileLock::acquire_in(&conf.data_dir, &dir.lock_name()).map_err(|e| {
        Error::from(KitError::Io {
            what: format!("lock dns state of network {:?}", conf.network),
            source: std::io::Error::other(e.to_string()),
        })
    })?;
    Ok(Locked { dir, _lock: lock })
}

/// DEL and GC remove only from a directory an ADD made: valid paths and its records file there,
/// checked before and again under the lock. `None`: nothing to remove (no lock is taken when
/// the directory never existed).
pub fn lock_existing(conf: &Config) -> Result<Option<(Locked, Records)>, Error> {
    let dir = NetDir::new(&conf.data_dir, &conf.network);
    if conf.paths_invalid().is_some() || !dir.records().exists() {
        return Ok(None);
    }
    let locked = lock(conf)?;
    if !locked.dir.records().exists() {
        return Ok(None);
    }
    let records = locked.records()?;
    Ok(Some((locked, records)))
}

impl Locked {
    pub fn records(&self) -> Result<Records, Error> {
        Ok(tether_dns_state::read_json(&self.dir.records())
            .map_err(state_err)?
            .unwrap_or_default())
    }

    pub fn write_records(&self, r: &Records) -> Result<(), Error> {
        tether_dns_state::write_json(&self.dir.records(), r).map_err(state_err)
    }

    /// The network has no attachment left: stop its server and remove its directory.
    pub fn remove_all(&self) -> Result<(), Error> {
        crate::server::stop(&self.dir);
        self.dir.remove().map_err(state_err)
    }

    /// Writes `r` and tells a running server; the last entry gone removes everything.
    pub fn store(&self, r: &Records) -> Result<(), Error> {
        if r.entries.is_empty() {
            return self.remove_all();
        }
        self.write_records(r)?;
        if crate::server::running(&self.dir).is_some()
            && let Err(e) = crate::server::control(&self.dir, "reload")
        {
            tracing::warn!("DNS server reload: {e}");
        }
        Ok(())
    }
}
