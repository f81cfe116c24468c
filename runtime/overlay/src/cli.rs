//! `tether overlay init|agent`: the clap types and the two entry points. The runtime's command
//! line embeds [`OverlayCmd`] and calls [`main`]; nothing else of the runtime is involved.

use crate::agent::{self, AgentOptions};
use crate::config::{Backend, NetworkConfig};
use crate::error::Result;
use crate::store::Store;
use clap::{Args, Subcommand};
use ipnetwork::Ipv4Network;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum OverlayCmd {
    /// Store a multi-host overlay network's definition in etcd (again with the same values: no-op)
    Init(InitArgs),
    /// Run this host's overlay agent in the foreground: lease a host subnet, program VXLAN peers
    Agent(AgentArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overlay network name
    pub name: String,
    /// etcd endpoint (http://HOST:PORT or etcd://HOST:PORT)
    #[arg(long, value_name = "URL")]
    pub etcd: String,
    /// The whole overlay, IPv4 (e.g. 10.200.0.0/16)
    #[arg(long, value_name = "CIDR")]
    pub subnet: Ipv4Network,
    /// Prefix length of each host's subnet [default: 24, or the subnet's + 1 if that is longer]
    #[arg(long, value_name = "LEN")]
    pub host_prefix: Option<u8>,
    /// VXLAN network identifier, 1..=16777215
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub vni: u32,
    /// VXLAN UDP port
    #[arg(long, default_value_t = 4789)]
    pub port: u16,
    /// How packets reach other hosts
    #[arg(long, value_enum, default_value_t = Backend::Vxlan)]
    pub backend: Backend,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Overlay network name (created by `tether overlay init`)
    pub name: String,
    /// etcd endpoint (http://HOST:PORT or etcd://HOST:PORT)
    #[arg(long, value_name = "URL")]
    pub etcd: String,
    /// Underlay interface: the VXLAN device sends from its IPv4 address, its MTU minus 50 is the overlay's
    #[arg(long, value_name = "IFACE")]
    pub iface: String,
    /// Seconds the host's subnet lease outlives a dead agent
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub lease_ttl: i64,
    /// Where lease.json, peers.json and agent.pid go [default: $TETHER_OVERLAY_DIR or /run/tether/overlay]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// At start, keep retrying while etcd is unreachable instead of failing (for boot ordering)
    #[arg(long)]
    pub wait_for_etcd: bool,
}

/// Runs an overlay command; returns the exit code (errors are printed on stderr).
pub fn main(cmd: OverlayCmd) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tether: start async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(cmd)) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tether: {e}");
            1
        }
    }
}

async fn run(cmd: OverlayCmd) -> Result<()> {
    match cmd {
        OverlayCmd::Init(a) => init(a).await,
        OverlayCmd::Agent(a) => {
            agent::run(AgentOptions {
                network: a.name,
                etcd: a.etcd,
                iface: a.iface,
                lease_ttl: a.lease_ttl,
                state_dir: a.state_dir.unwrap_or_else(tether_overlay_state::root),
                wait_for_etcd: a.wait_for_etcd,
            })
            .await
        }
    }
}

async fn init(a: InitArgs) -> Result<()> {
    tether_overlay_state::validate_name(&a.name)?;
    let host_prefix = a.host_prefix.unwrap_or(24.max(a.subnet.prefix() + 1));
    let cfg = NetworkConfig {
        subnet: a.subnet,
        host_prefix,
        vni: a.vni,
        port: a.port,
        backend: a.backend,
    };
    cfg.validate()?;
    crate::store::endpoint(&a.etcd)?;
    let store = Store::connect(&a.etcd, &a.name).await?;
    let created = store.init(&cfg).await?;
    let what = if created {
        "created"
    } else {
        "already exists with the same definition"
    };
    println!("{}", a.name);
    tracing::info!(network = %a.name, subnet = %cfg.subnet, host_prefix, vni = cfg.vni, "overlay network {what}");
    Ok(())
}
