//! The process model: clone the container's init straight into its new namespaces and cgroups (v2:
//! `clone3(CLONE_INTO_CGROUP)`; v1: it moves itself first thing), hold it on a sync socket while
//! the parent writes id maps and runs CNI ADD, then let it exec. Without a user namespace it does
//! its own setup (hostname, mounts, root) while ADD runs; with one, after the go-ahead. It is PID
//! 1 of its PID namespace. One file per job:
//!
//! ```text
//! clone.rs    the clone and the handshake (Child: id maps, release, abort)
//! child.rs    in the init until exec, and become_root_and_exec, shared with exec.rs
//! error.rs    ChildError: what failed before exec, and its exit code
//! rootfs.rs   the mounts of --rootfs, then pivot_root
//! kernfs.rs   /proc, and /sys with the cgroup filesystem, read-only
//! devfs.rs    the tmpfs /dev: a few devices, pts, shm, mqueue
//! masks.rs    masked and read-only paths, --read-only (after pivot_root)
//! signals.rs  forwarding, ignoring, and the clean slate before exec
//! exec.rs     tether exec: join a running container's namespaces
//! wait.rs     waiting for the init (forwarding signals) and for any process by pidfd
//! ```
//!
//! A new `tether run` flag that changes the container's process is read from the record's
//! `Config` in `child.rs` (see `run/opts.rs`).

mod child;
mod clone;
mod devfs;
mod error;
mod exec;
mod kernfs;
mod masks;
mod rootfs;
mod signals;
mod wait;

pub use child::{ChildSpec, DEFAULT_PATH, become_root_and_exec};
pub use clone::{Child, clone_flags, spawn};
pub use error::ChildError;
pub use exec::{ExecSpec, JOIN_ORDER, exec_in, namespaces_of};
pub use masks::{MASKED_PATHS, READONLY_PATHS};
pub use signals::{ignore_forwarded, install_forwarding};
pub use wait::{wait_exit, wait_forwarding};
