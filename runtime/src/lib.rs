//! `tether`: a small container runtime. It clones a container's init into new namespaces, puts it
//! in cgroups (v1 or v2), attaches it to a network through CNI plugins exactly as any CNI runtime
//! would, and keeps its state on disk so that any later `tether` can stop, inspect and clean it up.
//!
//! ```text
//! cli/        args.rs (clap types) · dispatch.rs (one arm per command) · print.rs (stdout)
//! run/        tether run: opts.rs (RunArgs, clap) → plan.rs (checked: the record-to-be)
//!             → create.rs (reserve, cgroup, clone, pin, ADD, release) · mod.rs (supervise)
//! container   lifecycle of existing containers: stop, kill, rm, pause, exec, cleanup
//! gc          network prune and network rm (GC through the conflist executor)
//! orphans     what a tether killed while creating leaves, and its sweep
//! cnitool     tether cni: drive a conflist by hand
//! process/    clone + handshake · child (one become_root_and_exec) · rootfs · signals
//!             · exec (tether exec) · wait · error (ChildError, exit codes)
//! network/    mode (NetMode) · conflist · version (VERSION + cache) · store · record · etc
//! cgroups/    v1 · v2 · limits (LimitFlags, Limits) · fsutil
//! confine/    capabilities, seccomp (Docker's default profile built in), no_new_privs, --user
//! image/      layer store, archive import/export, whiteouts, diff, commit (overlayfs roots)
//! state       the container's record on disk, its locks
//! netns       pinned namespaces, and NetnsSwitch (the guard of any netns switch)
//! tty/        -i/-t: pty (open, controlling tty, /dev/console) · raw (terminal mode) · copy
//! paths · atomic · poll · units · hook · error      leaves
//! ```
//!
//! Dependencies point down: cli → run, container, gc, cnitool → process, network, cgroups, state
//! → tty → paths, atomic, poll, units, error; no module circles (tty uses only error).
//!
//! **A new `tether run` flag** is a field of [`run::RunArgs`] (`run/opts.rs`, with its help
//! text) and its use in `run/plan.rs`; if the container's process needs it, a field of
//! [`state::Config`] (persisted, shown by `inspect`) that `process/child.rs` reads. A new limit
//! is a field of [`cgroups::LimitFlags`] and [`cgroups::Limits`] and its file in `v1.rs`/`v2.rs`.

pub mod atomic;
pub mod cgroups;
pub mod cli;
pub mod cnitool;
pub mod confine;
pub mod container;
pub mod error;
pub mod gc;
pub mod hook;
pub mod image;
pub mod netns;
pub mod network;
pub mod orphans;
pub mod paths;
pub mod poll;
pub mod process;
pub mod run;
pub mod state;
pub mod tty;
pub mod units;

pub use error::{Error, Result};
