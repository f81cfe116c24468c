//! Tether's firewall layer: the [`Firewall`] backend trait that every plugin calls (bridge's
//! ipMasq, portmap, firewall), chosen by [`select`], and its first implementation, [`Iptables`],
//! over `iptables`/`ip6tables` (nf_tables or legacy backend). See [`backend`]'s diagram for the
//! layering; inputs are data ([`policy`]), never a backend's syntax. A second backend is one new
//! module implementing [`Firewall`], and one more branch in [`select`].
//!
//! Below the trait, every change is built as one [`Batch`] and applied with a single
//! `iptables-restore --noflush --wait` exec fed on stdin: one process and one transaction per
//! plugin call, instead of the reference plugins' several execs (and xtables lock grabs) per
//! rule. Nothing in the hot path asks the kernel whether a rule exists (`iptables -C`): chains we
//! own are declared (created or flushed) idempotently, and teardown first tries the exact deletes
//! and only reads the table (`iptables-save`, once) when they fail.
//!
//! Per-attachment objects are found again by deterministic names ([`chain_name`]) and comments
//! ([`comment`]), never by reading state inside the container, so DEL and GC work without the
//! netns or a `prevResult`. The bridge's masquerading is per network, not per attachment
//! ([`masquerade_ensure`]): shared chains that stay until the network's last attachment goes
//! ([`masquerade_remove`], which the bridge calls then).
//!
//! Every string that ends up as an iptables argument is validated ([`validate`]); addresses come
//! typed as [`IpNetwork`].
//!
//! Plugins that plan from the current rules use [`sweep`] (save, plan, apply, re-plan when the
//! batch went stale) under [`lock::netfilter_lock`] (from `tether-lock`, the crate below this
//! one), one family per thread ([`per_family`]).

pub mod backend;
mod batch;
mod exec;
pub mod iptables;
pub mod lock;
mod masq;
mod masq_remove;
mod names;
pub mod nftables;
pub mod policy;
mod saved;
mod sweep;
pub mod validate;

use std::net::IpAddr;
use std::path::PathBuf;

pub use ipnetwork::IpNetwork;

pub use backend::{BACKEND_ENV, Choice, Dual, Firewall, iptables_usable, select, select_for};
pub use batch::{Batch, Rule};
pub use exec::{Netfilter, Tools};
pub use iptables::Iptables;
pub use masq::{
    MASQ_CHAIN_PREFIX, masq_chain_name, masq_comment, masquerade_check, masquerade_ensure,
};
pub use masq_remove::{masquerade_networks, masquerade_remove};
pub use names::{chain_name, comment, parse_comment};
pub use nftables::Nftables;
pub use policy::{
    AttachmentId, FilterPolicy, HostIp, IngressPolicy, Mapping, MarkChain, PortPolicy, Proto,
    Published,
};
pub use saved::{SavedRule, SavedTable, SavedTables, delete_rules_with_comment};
pub use sweep::{OnSaveError, PLAN_ATTEMPTS, SweepError, per_family, sweep};

/// IP family: the v4 and v6 tables are separate commands (`iptables*` vs `ip6tables*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(net: &IpNetwork) -> Family {
        Family::from(net.ip())
    }

    /// Prefix length of a single host (`/32`, `/128`).
    pub fn host_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The multicast range, which must never be masqueraded.
    pub fn multicast(self) -> IpNetwork {
        match self {
            Family::V4 => "224.0.0.0/4".parse().expect("static network"),
            Family::V6 => "ff00::/8".parse().expect("static network"),
        }
    }
}

impl From<IpAddr> for Family {
    fn from(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// The iptables tables we write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Nat,
    Filter,
    Mangle,
    Raw,
}

impl Table {
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
            Table::Mangle => "mangle",
            Table::Raw => "raw",
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A string that would become an iptables argument was rejected before anything ran.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// The binary could not be started at all (missing, or the netns could not be entered).
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// The command ran and failed. `input` is the batch text fed on stdin (empty for `save`).
    #[error("{command} failed ({status}): {}{}", stderr.trim(), failing_line(stderr, input))]
    Command {
        command: String,
        status: String,
        stderr: String,
        input: String,
    },
    /// A CHECK found the rules missing or different.
    #[error("{0}")]
    Check(String),
    /// What an ADD asks for is held by another attachment (a published host port).
    #[error("{0}")]
    Conflict(String),
    /// The nftables backend's netlink transaction or read failed (the kernel's answer, typed).
    #[error("nftables: {0}")]
    Nftables(#[from] tether_nft::Error),
    /// A [`lock::FileLock`] could not be taken; `action` says which step failed.
    #[error("{action} {}: {source}", path.display())]
    Lock {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether retrying the same command may succeed: nf_tables returns EAGAIN when a concurrent
    /// transaction changed the ruleset generation under us; legacy reports lock contention.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Command { stderr, .. } => {
                stderr.contains("Resource temporarily unavailable")
                    || stderr.contains("holding the xtables lock")
            }
            _ => false,
        }
    }

    /// The input line a failed restore named, if it named one.
    pub fn failed_input_line(&self) -> Option<&str> {
        match self {
            Error::Command { stderr, input, .. } => failed_line(stderr, input),
            _ => None,
        }
    }
}

/// `iptables-restore` names the failing input line ("line 3 failed"); quote it so the error is
/// readable without the whole batch.
fn failing_line(stderr: &str, input: &str) -> String {
    match failed_line(stderr, input) {
        Some(line) => format!(" [input line: {line}]"),
        None => String::new(),
    }
}

fn failed_line<'a>(stderr: &str, input: &'a str) -> Option<&'a str> {
    let n = stderr
        .split("line")
        .skip(1)
        .filter_map(|rest| {
            // nft: "line 3 failed"; legacy: "Error occurred at line: 3".
            let rest = rest.trim_start_matches([':', ' ']);
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        })
        .next();
    n.and_then(|n| input.lines().nth(n.checked_sub(1)?))
}
