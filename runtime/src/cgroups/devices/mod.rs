//! The device cgroup: which device nodes a container may open (r, w) or create (m).
//!
//! ```text
//! default (Docker's)   c *:* m   b *:* m          mknod anything (CAP_MKNOD is kept) ...
//!                      c 1:3 1:5 1:7 1:8 1:9 rwm  ... but open only null zero full random urandom
//!                      c 5:0 5:1 5:2 rwm          tty console ptmx
//!                      c 136:* rwm                the pts of its own devpts
//!                      + one rule per --device
//! --privileged         no rules: every device
//! v1.rs                devices.deny "a", then devices.allow per rule (before the init joins)
//! bpf.rs               v2: a BPF_CGROUP_DEVICE program attached to the cgroup directory
//! ```

mod bpf;
mod v1;

use super::{CgroupRecord, Version};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use bpf::{Insn, program};

/// A host device passed through with `--device HOST[:CONTAINER][:PERMS]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub host_path: PathBuf,
    /// Absolute, under /dev.
    pub container_path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: u32,
    pub minor: u32,
    /// Some of `rwm`.
    pub access: String,
}

/// One allow rule: `kind` is `a`, `c` or `b`; `None` is the wildcard `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub kind: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: String,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |v: Option<u32>| v.map_or("*".to_string(), |v| v.to_string());
        write!(
            f,
            "{} {}:{} {}",
            self.kind,
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

/// The device nodes of every container's `/dev` (name, major, minor): see `process/devfs.rs`.
pub const STANDARD_NODES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn rule(kind: char, major: Option<u32>, minor: Option<u32>, access: &str) -> Rule {
    Rule {
        kind,
        major,
        minor,
        access: access.into(),
    }
}

/// Docker's default allow list plus the `--device`s.
pub fn default_rules(devices: &[Device]) -> Vec<Rule> {
    let mut v = vec![rule('c', None, None, "m"), rule('b', None, None, "m")];
    for &(_, major, minor) in STANDARD_NODES {
        v.push(rule('c', Some(major), Some(minor), "rwm"));
    }
    v.push(rule('c', Some(5), Some(1), "rwm"));
    v.push(rule('c', Some(5), Some(2), "rwm"));
    v.push(rule('c', Some(136), None, "rwm"));
    for d in devices {
        v.push(rule(d.kind, Some(d.major), Some(d.minor), &d.access));
    }
    v
}

/// Restricts the (created, still empty) cgroup to `rules`; `None` leaves every device allowed.
pub fn apply(rec: &CgroupRecord, rules: Option<&[Rule]>) -> Result<()> {
    let Some(rules) = rules else { return Ok(()) };
    match rec.version {
        Version::V1 => match rec.paths.get("devices") {
            Some(dir) => v1::apply(dir, rules),
            None => {
                tracing::warn!(
                    "the v1 devices controller is not mounted: devices are not restricted"
                );
                Ok(())
            }
        },
        Version::V2 => match rec.paths.get("unified") {
            Some(dir) => bpf::attach(dir, rules),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_list_is_dockers_in_cgroup_v1_syntax() {
        let tun = Device {
            host_path: "/dev/net/tun".into(),
            container_path: "/dev/net/tun".into(),
            kind: 'c',
            major: 10,
            minor: 200,
            access: "rw".into(),
        };
        let v: Vec<String> = default_rules(&[tun]).iter().map(Rule::to_string).collect();
        assert_eq!(
            v,
            [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
                "c 10:200 rw"
            ]
        );
    }
}
