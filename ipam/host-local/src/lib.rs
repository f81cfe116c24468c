//! host-local IPAM: addresses from configured ranges, leased in files on the local disk.
//!
//! Config- and disk-compatible with the reference host-local (see [`store`] for the layout), so a
//! host can switch between the two in either direction. Beyond the reference:
//! - a repeated ADD for the same container and interface returns the lease it already holds
//!   (the reference fails with "duplicate allocation is not allowed");
//! - STATUS answers code 50 when a range set has no free address; GC releases every lease
//!   whose attachment is not in the runtime's valid list;
//! - ADD and DEL do not slow down as leases accumulate: they look the attachment up in an index
//!   of our own ([`index`]) instead of reading every lease file, and rebuild it from the leases
//!   after the reference (or anyone else) changed the directory;
//! - an exhausted pool on ADD is code 50 too; configuration problems are code 7 (the reference
//!   answers 999 for everything); DEL only needs the network name and `dataDir`, so a config
//!   whose ranges became invalid still releases its leases;
//! - a subnet of `/0`, and a gateway, `rangeStart` or `rangeEnd` on the subnet's network address
//!   (or IPv4 broadcast address), are refused (the reference hands such addresses out);
//! - a failed ADD takes back every file it wrote, also on a full disk (code 5): the lease, and
//!   the round-robin cursor (removed, or its old content put back); after a write failed, the
//!   index is not trusted until the next operation rebuilds it.

pub mod alloc;
pub mod config;
pub mod dns;
pub mod index;
pub mod range;
pub mod store;

use cni::{Attachment, CniResult, ErrorCode, Plugin, Request};
use config::Config;
use store::{Access, Store};

/// Everything that can go wrong, mapped to a CNI code in one place (`From<Error> for cni::Error`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network config is invalid (code 7).
    #[error("{0}")]
    Config(String),
    /// `CNI_ARGS` holds something unusable (code 4).
    #[error("{0}")]
    Args(String),
    /// A range set has no free address (code 50: the plugin cannot serve ADDs for it).
    #[error("{0}")]
    Exhausted(String),
    /// A requested address cannot be given (code 999, as the reference).
    #[error("{0}")]
    Request(String),
    /// CHECK found the leases not as ADD left them (code 999).
    #[error("{0}")]
    Check(String),
    /// Reading or writing the lease store failed (code 5).
    #[error("{what}: {source}{}", disk_full_hint(source))]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// What to do about the one I/O error an operator can fix: a full disk (or quota) under the
/// lease store.
fn disk_full_hint(e: &std::io::Error) -> &'static str {
    use nix::errno::Errno;
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOSPC | Errno::EDQUOT) => {
            " (the filesystem holding the lease store, ipam.dataDir, is full: free some space and retry; a failed ADD keeps no lease)"
        }
        _ => "",
    }
}

impl Error {
    /// Puts `what` in front of the message, keeping the kind.
    pub fn context(self, what: impl std::fmt::Display) -> Error {
        match self {
            Error::Config(m) => Error::Config(format!("{what}: {m}")),
            Error::Args(m) => Error::Args(format!("{what}: {m}")),
            Error::Exhausted(m) => Error::Exhausted(format!("{what}: {m}")),
            Error::Request(m) => Error::Request(format!("{what}: {m}")),
            Error::Check(m) => Error::Check(format!("{what}: {m}")),
            Error::Io { what: w, source } => Error::Io {
                what: format!("{what}: {w}"),
                source,
            },
        }
    }
}

impl From<Error> for cni::Error {
    fn from(e: Error) -> cni::Error {
        let code = match &e {
            Error::Config(_) => ErrorCode::InvalidNetworkConfig,
            Error::Args(_) => ErrorCode::InvalidEnvironment,
            Error::Exhausted(_) => ErrorCode::NotAvailable,
            Error::Request(_) | Error::Check(_) => ErrorCode::Internal,
            Error::Io { .. } => ErrorCode::IoFailure,
        };
        cni::Error::new(code, e.to_string())
    }
}

/// The plugin, for `cni::run`.
pub struct HostLocal;

fn config(req: &Request) -> Result<Config, Error> {
    Config::parse(&req.raw, &req.conf.name, req.version(), req.cni_arg("IP"))
}

impl Plugin for HostLocal {
    fn name(&self) -> &'static str {
        "host-local"
    }

    fn known_args(&self) -> &'static [&'static str] {
        &["IP"]
    }

    fn add(&self, req: &Request) -> Result<CniResult, cni::Error> {
        let cfg = config(req)?;
        let dns = match &cfg.resolv_conf {
            Some(path) => dns::parse_resolv_conf(&std::fs::read_to_string(path).map_err(|e| {
                Error::Config(format!("cannot read resolvConf {}: {e}", path.display()))
            })?),
            None => cni::Dns::default(),
        };
        let store =
            Store::open(&cfg.data_dir, &cfg.network, Access::Create)?.expect("Create always opens");
        let ips = alloc::add(&cfg, &store, &req.container_id, &req.ifname)?;
        Ok(CniResult {
            cni_version: req.version().to_string(),
            ips,
            routes: cfg.routes,
            dns,
            ..Default::default()
        })
    }

    fn del(&self, req: &Request) -> Result<(), cni::Error> {
        let data_dir = config::data_dir(&req.raw)?;
        let Some(store) = Store::open(&data_dir, &req.conf.name, Access::Modify)? else {
            return Ok(());
        };
        let released = alloc::release(&store, &req.container_id, &req.ifname)?;
        tracing::debug!(?released, "released");
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), cni::Error> {
        let cfg = config(req)?;
        let leases = match Store::open(&cfg.data_dir, &cfg.network, Access::Read)? {
            Some(store) => store.leases()?,
            None => Default::default(),
        };
        Ok(alloc::check(
            &cfg,
            &leases,
            &req.container_id,
            &req.ifname,
            req.prev_result.as_ref(),
        )?)
    }

    fn status(&self, req: &Request) -> Result<(), cni::Error> {
        let cfg = config(req)?;
        let leases = match Store::open(&cfg.data_dir, &cfg.network, Access::Read)? {
            Some(store) => store.leases()?,
            None => Default::default(),
        };
        Ok(alloc::status(&cfg, &leases)?)
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), cni::Error> {
        let data_dir = config::data_dir(&req.raw)?;
        let Some(store) = Store::open(&data_dir, &req.conf.name, Access::Modify)? else {
            return Ok(());
        };
        let released = alloc::gc(&store, valid)?;
        if !released.is_empty() {
            tracing::info!(?released, "GC released stale leases");
        }
        Ok(())
    }
}
