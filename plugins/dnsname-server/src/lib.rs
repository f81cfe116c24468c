//! `tether-dns`: one DNS server per network, started and supervised by the `dnsname` plugin.
//!
//! ```text
//!   container ──udp/tcp :53──► gateway addr ──► listen (UDP loops, TCP accept)
//!                                                  │
//!                                      answer::respond(table, query)
//!                                   ┌──────────────┴───────────────┐
//!                              local answer                     Forward
//!          (A/AAAA of names and aliases, short or in      upstream::forward ──► resolvers of
//!           the domain; PTR of their addresses;           (timeout, never to     resolv.conf
//!           NXDOMAIN for unknown names in the domain)      our own addresses)
//!
//!   table: Arc<Table> behind a lock, swapped whole on reload (control socket `reload`, SIGHUP):
//!   a query in flight keeps the table it started with, so none is lost or half-answered.
//! ```
//!
//! Everything it knows comes from the network's state directory (see `tether-dns-state`).

pub mod answer;
pub mod control;
pub mod listen;
pub mod table;
pub mod upstream;

use std::sync::{Arc, RwLock};

use tether_dns_state::{NetDir, Records, ServerConfig};

/// What every task shares: the current table and upstreams, swapped whole on reload.
pub struct State {
    pub dir: NetDir,
    pub config: ServerConfig,
    current: RwLock<Arc<Loaded>>,
}

/// One generation of what the server serves.
pub struct Loaded {
    pub table: table::Table,
    pub upstreams: Vec<std::net::SocketAddr>,
}

impl State {
    pub fn new(dir: NetDir, config: ServerConfig) -> Result<State, String> {
        let loaded = load(&dir, &config)?;
        Ok(State {
            dir,
            config,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// The generation to answer one query with.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.read().expect("state lock").clone()
    }

    /// Re-reads the records and resolv.conf; the old generation stays in use if that fails.
    /// Returns the number of entries now served.
    pub fn reload(&self) -> Result<usize, String> {
        let loaded = load(&self.dir, &self.config)?;
        let n = loaded.table.entries();
        *self.current.write().expect("state lock") = Arc::new(loaded);
        tracing::info!(entries = n, "reloaded");
        Ok(n)
    }
}

fn load(dir: &NetDir, config: &ServerConfig) -> Result<Loaded, String> {
    let records: Records = tether_dns_state::read_json(&dir.records())
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let table = table::Table::new(&config.domain, &records);
    let upstreams = upstream::from_resolv_conf(&config.resolv_conf, &config.listen, config.port);
    Ok(Loaded { table, upstreams })
}
