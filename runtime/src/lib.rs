//! `tether`: a small container runtime. It clones a container's init into new namespaces, puts it
//! in cgroups (v1 or v2), attaches it to a network through CNI plugins exactly as any CNI runtime
//! would, and keeps its state on disk so that any later `tether` can stop, inspect and clean it up.
//!
//! Modules: [`cli`] (clap, printing), [`run`] (create and supervise), [`container`] (lifecycle of
//! existing containers), [`process`] (clone, sync, in-child setup, exec), [`cgroups`], [`network`]
//! (`--net` modes, conflists, plugin lookup), [`state`] (files under `--root`), [`units`] (parsing).

pub mod atomic;
pub mod cgroups;
pub mod cli;
pub mod cnitool;
pub mod container;
pub mod error;
pub mod gc;
pub mod hook;
pub mod netns;
pub mod network;
pub mod orphans;
pub mod paths;
pub mod poll;
pub mod process;
pub mod run;
pub mod state;
pub mod units;

pub use error::{Error, Result};
