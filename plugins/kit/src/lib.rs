//! The plugin kit: what Tether's plugins share, so that no plugin crate imports another.
//!
//! ```text
//!  runtime/ (tether)                         the runtime: execs plugins through the protocol
//!  ─────────────────────────────────────────────────────────────────────────────────────────
//!  plugins/{bridge,loopback,none,host,       one binary each; depend on the floors below,
//!   container,portmap,firewall,tuning,        never on each other
//!   bandwidth,dnsname}, ipam/host-local
//!  ─────────────────────────────────────────────────────────────────────────────────────────
//!  plugins/kit          plugins/netlink      plugins/netfilter     shared mechanisms
//!  (this crate: uses     (rtnetlink facade)   (iptables batches)
//!   both beside it)
//!  ─────────────────────────────────────────────────────────────────────────────────────────
//!  plugins/cni                                the protocol: env, config, results, error JSON,
//!                                             dispatch, delegation, the CNI_NETNS check
//! ```
//!
//! Each floor depends only on floors below it. What is here:
//! - [`errors`]: **the one place where library errors become CNI codes**: [`errors::nl`] and
//!   [`errors::nf`] for `tether-netlink` and `tether-netfilter` failures, [`errors::io`] for file
//!   errors, and [`Error`], the error type of the plugins that have their own library code
//!   (host-local, tuning, bandwidth). README's list of codes is tested against it.
//! - [`netns`]: opening the container's namespace with the decided codes (3 when it is gone, 4
//!   when `CNI_NETNS` is not a network namespace), and a netlink handle inside it.
//! - [`RequestExt`]: what ADD and CHECK require from a [`cni::Request`], as CNI errors instead of
//!   panics.
//! - [`config::field`]: one key of a plugin's config, absent or `null` as `None`, a wrong type
//!   as code 7 naming the key.
//! - [`lo`]: `lo` up/down/check, the reference's `lo` result, and the ADD/CHECK of the plugins
//!   whose whole job is `lo` (loopback, none).
//! - [`describe()`]: a namespace's interfaces, addresses and default routes as a result (host,
//!   container).
//! - [`undo`]: the Drop-based undo stack ADD pushes its removals on.
//! - [`gc`]: the `(network, container id, ifname)` tag as a netfilter owner, and GC's test of whether
//!   an attachment is stale.
//!
//! A new plugin is a crate under `plugins/` (a `main.rs` calling `cni::run`, the logic in
//! `lib.rs`) that depends on `cni`, this kit and, as it needs, `tether-netlink` and
//! `tether-netfilter`; it reports failures through [`errors`], never by picking codes itself.
//! Something two plugins need goes here (or, if it is a mechanism of its own, into netlink or
//! netfilter), not into one plugin for the other to import.

pub mod config;
pub mod describe;
pub mod errors;
pub mod gc;
pub mod lo;
pub mod netns;
mod request;
pub mod undo;

pub use describe::describe;
pub use errors::{Error, nf, nl};
pub use request::RequestExt;
pub use undo::Undo;
