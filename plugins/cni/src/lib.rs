//! The CNI protocol, as Tether's plugins and runtime speak it.
//!
//! - Plugin side: [`skel::run`] reads the `CNI_*` environment and the config on stdin, validates them,
//!   dispatches to a [`Plugin`], and prints exactly one result or error JSON on stdout.
//! - Both sides: [`CniResult`] is the spec 1.1.0 result model, converted from and to every version
//!   from 0.1.0 to 1.1.0, every field checked on the way in ([`result_check`]: a `prevResult`
//!   with an address lacking its prefix is code 7 for every plugin). [`Error`] is the CNI error
//!   with its code. This crate picks the codes of the protocol's own checks (environment, JSON,
//!   versions, [`netns`]); library errors get theirs in one place above it, the plugin kit's
//!   `errors` module (`tether-kit`).
//! - Runtime side: [`runtime`] loads conflists and runs them (`prevResult` chaining, result cache),
//!   and [`delegate`] runs IPAM plugins for a plugin.
//! - [`netns`]: the one check of what a `CNI_NETNS` may be, with its codes (3 gone, 4 invalid).

pub mod delegate;
pub mod error;
pub mod invoke;
pub mod logging;
pub mod netns;
pub mod request;
pub mod result;
pub mod result_check;
pub mod runtime;
pub mod skel;
pub mod types;
pub mod version;

pub use error::{Error, ErrorCode};
pub use request::{Command, Request};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use skel::{Plugin, run};
pub use types::{Attachment, NetConf};
