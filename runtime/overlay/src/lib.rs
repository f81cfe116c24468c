//! The overlay agent: multi-host networking over VXLAN with its cluster state in etcd, the
//! way flannel does it, as two `tether` commands (`overlay init`, `overlay agent`).
//!
//! ```text
//!  cli        clap types, entry points (a current-thread tokio runtime)
//!   └ agent   the daemon's loop: lease, sync, watch, renew, reconcile, teardown
//!      ├ store      etcd (etcd-client): config, subnets by txn, leases, watch — deadlines
//!      ├ dataplane  netlink (rtnetlink): tvx-<vni>, neighbour + FDB + route per peer
//!      └ config     the definition, the key layout, host-subnet arithmetic (pure)
//!  error      one error type; messages name the URL, the interface, the network
//! ```
//!
//! The agent shares nothing with the `overlay` CNI plugin but the files of
//! `tether-overlay-state` (lease.json, peers.json, agent.pid), so no plugin links gRPC.

pub mod agent;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod error;
pub mod store;

pub use cli::{OverlayCmd, main};
pub use error::{Error, Result};
