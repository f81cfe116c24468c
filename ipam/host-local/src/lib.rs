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

use cni::{Attachment, CniResult, Plugin, Request};
use config::Config;
use store::{Access, Store};

/// The plugin kit's error type: what can go wrong here is `Config` (code 7), `Args` (4),
/// `Exhausted` (50: the plugin cannot serve ADDs for that range set), `Request` (a requested
/// address cannot be given, 999 as the reference), `Mismatch` (CHECK found the leases not as ADD
/// left them, 999) and `Io` (the lease store, 5); the codes are the kit's one table.
pub use tether_kit::Error;

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
