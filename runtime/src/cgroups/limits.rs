//! Resource limits: the `tether run` flags that set them ([`LimitFlags`], flattened into the run
//! command's arguments) and their checked form ([`Limits`], persisted in the container's record
//! and applied by both cgroup backends). A new limit flag is a field of `LimitFlags`, its check in
//! [`LimitFlags::parse`], a field of `Limits` and its file in `v1.rs` / `v2.rs`.

use crate::error::{Error, Result};
use crate::units;
use serde::{Deserialize, Serialize};

/// What the user asked for, as typed.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitFlags {
    /// Memory limit (e.g. 64m, 1g); the OOM killer acts beyond it
    #[arg(short, long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Memory plus swap limit (needs --memory; -1 = unlimited swap)
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// CPU limit in CPUs (e.g. 0.5): a CFS quota
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    /// Relative CPU weight (2 to 262144, default 1024)
    #[arg(short = 'c', long, value_name = "SHARES")]
    pub cpu_shares: Option<u64>,
    /// CPUs the container may run on (e.g. 0-1,3)
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Maximum number of processes (-1 = unlimited)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
}

/// Checked limits, in the units the cgroup files take.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Memory plus swap; -1 for unlimited swap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<i64>,
    /// CFS quota and period in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<(u64, u64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

impl LimitFlags {
    /// Checks every flag; a malformed value is a usage error (nothing is created yet).
    pub fn parse(&self) -> Result<Limits> {
        let memory = self
            .memory
            .as_deref()
            .map(|m| units::parse_size("--memory", m))
            .transpose()?;
        if let Some(m) = memory
            && m < 6 << 20
        {
            return Err(Error::usage(format!(
                "--memory {} is too small: the minimum is 6m",
                self.memory.as_deref().unwrap_or_default()
            )));
        }
        let memory_swap = match self.memory_swap.as_deref() {
            None => None,
            Some("-1") => Some(-1),
            Some(s) => {
                let v = units::parse_size("--memory-swap", s)?;
                match memory {
                    None => {
                        return Err(Error::usage(
                            "--memory-swap needs --memory: it is the total of memory and swap",
                        ));
                    }
                    Some(m) if v < m => {
                        return Err(Error::usage(format!(
                            "--memory-swap {s} is smaller than --memory: it is the total of memory and swap, so it must be at least as large (or -1 for unlimited swap)"
                        )));
                    }
                    _ => {}
                }
                Some(v as i64)
            }
        };
        if let Some(s) = self.cpu_shares
            && !(2..=262_144).contains(&s)
        {
            return Err(Error::usage(format!(
                "--cpu-shares {s} is out of range: use 2 to 262144 (1024 is the default weight)"
            )));
        }
        if let Some(p) = self.pids_limit
            && (p == 0 || p < -1)
        {
            return Err(Error::usage(format!(
                "--pids-limit {p} is invalid: use a positive number, or -1 for unlimited"
            )));
        }
        Ok(Limits {
            memory,
            memory_swap,
            cpu_quota: self.cpus.as_deref().map(units::parse_cpus).transpose()?,
            cpu_shares: self.cpu_shares,
            cpuset_cpus: self
                .cpuset_cpus
                .as_deref()
                .map(units::parse_cpuset)
                .transpose()?,
            pids: self.pids_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_limits_or_clear_errors() {
        let f = LimitFlags {
            memory: Some("64m".into()),
            memory_swap: Some("-1".into()),
            cpus: Some("0.5".into()),
            pids_limit: Some(10),
            ..Default::default()
        };
        let l = f.parse().unwrap();
        assert_eq!(l.memory, Some(64 << 20));
        assert_eq!(l.memory_swap, Some(-1));
        assert_eq!(l.cpu_quota, Some((50_000, 100_000)));
        assert_eq!(l.pids, Some(10));
        assert!(LimitFlags::default().parse().unwrap().is_empty());
        let err = |f: LimitFlags| f.parse().unwrap_err().to_string();
        assert!(
            err(LimitFlags {
                memory: Some("1m".into()),
                ..Default::default()
            })
            .contains("minimum")
        );
        assert!(
            err(LimitFlags {
                memory_swap: Some("1g".into()),
                ..Default::default()
            })
            .contains("needs --memory")
        );
        assert!(
            err(LimitFlags {
                pids_limit: Some(0),
                ..Default::default()
            })
            .contains("--pids-limit")
        );
    }
}
