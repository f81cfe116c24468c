//! cgroup v2: one directory in the unified hierarchy, controllers enabled top-down.

use super::fsutil::{self, keyed, read, read_u64, write};
use super::{CgroupRecord, Limits, Stats, V2_CONTROLLERS, Version};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct V2 {
    dir: PathBuf,
}

/// The v2 controllers a set of limits needs (freezing and killing are core v2 features).
pub(crate) fn controllers_for(l: &Limits) -> Vec<&'static str> {
    let mut v = Vec::new();
    if l.memory.is_some() || l.memory_swap.is_some() {
        v.push("memory");
    }
    if l.cpu_quota.is_some() || l.cpu_shares.is_some() {
        v.push("cpu");
    }
    if l.cpuset_cpus.is_some() {
        v.push("cpuset");
    }
    if l.pids.is_some() {
        v.push("pids");
    }
    v
}

/// runc's conversion from cgroup v1 `cpu.shares` [2, 262144] to v2 `cpu.weight` [1, 10000].
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

impl V2 {
    pub fn from_record(rec: &CgroupRecord) -> V2 {
        V2 {
            dir: rec.paths.get("unified").cloned().unwrap_or_default(),
        }
    }

    /// Enables our controllers in `dir`'s `cgroup.subtree_control`, as far as `dir` offers them.
    fn enable_controllers(dir: &Path) -> Result<()> {
        let available = fsutil::read_words(&dir.join("cgroup.controllers"));
        let enabled = fsutil::read_words(&dir.join("cgroup.subtree_control"));
        for c in V2_CONTROLLERS {
            if available.iter().any(|a| a == c) && !enabled.iter().any(|e| e == c) {
                write(dir, "cgroup.subtree_control", &format!("+{c}")).map_err(|e| {
                    if fsutil::procs(dir).is_empty() {
                        e
                    } else {
                        Error::Cgroup(format!(
                            "cannot enable the {c} controller in {}: it holds processes, and cgroup v2 allows \
                             controllers only below cgroups without processes; pass an absolute --cgroup-parent such as /tether",
                            dir.display()
                        ))
                    }
                })?;
            }
        }
        Ok(())
    }

    fn apply(&self, l: &Limits) -> Result<()> {
        let d = &self.dir;
        if let Some(m) = l.memory {
            write(d, "memory.max", &m.to_string())?;
            let swap = match l.memory_swap {
                Some(-1) => Some("max".to_string()),
                Some(total) => Some((total as u64).saturating_sub(m).to_string()),
                // Docker's default: as much swap as memory.
                None => Some(m.to_string()),
            };
            if let Some(s) = swap
                && d.join("memory.swap.max").exists()
            {
                write(d, "memory.swap.max", &s)?;
            }
        }
        if let Some((quota, period)) = l.cpu_quota {
            write(d, "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(s) = l.cpu_shares {
            write(d, "cpu.weight", &shares_to_weight(s).to_string())?;
        }
        if let Some(cpus) = &l.cpuset_cpus {
            write(d, "cpuset.cpus", cpus)?;
        }
        if let Some(p) = l.pids {
            let v = if p < 0 {
                "max".to_string()
            } else {
                p.to_string()
            };
            write(d, "pids.max", &v)?;
        }
        Ok(())
    }
}

impl super::Cgroup for V2 {
    fn record(&self) -> CgroupRecord {
        CgroupRecord {
            version: Version::V2,
            paths: [("unified".to_string(), self.dir.clone())].into(),
        }
    }

    fn create(&self, limits: &Limits) -> Result<()> {
        let mount = super::mount_of(&self.dir, &super::mountpoints()).ok_or_else(|| {
            Error::Cgroup(format!("{} is on no cgroup2 mount", self.dir.display()))
        })?;
        let mut created = Vec::new();
        let result = (|| {
            // Controllers must be enabled in every ancestor's subtree_control, from the root down.
            let rel = self
                .dir
                .strip_prefix(&mount)
                .unwrap_or(Path::new(""))
                .to_path_buf();
            let mut cur = mount.clone();
            for comp in rel.components() {
                Self::enable_controllers(&cur)?;
                cur.push(comp);
                match std::fs::create_dir(&cur) {
                    Ok(()) => created.push(cur.clone()),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(Error::Cgroup(format!(
                            "failed to create {}: {e}",
                            cur.display()
                        )));
                    }
                }
            }
            if !created.contains(&self.dir) && !fsutil::procs(&self.dir).is_empty() {
                return Err(Error::Cgroup(format!(
                    "{} already exists and has processes",
                    self.dir.display()
                )));
            }
            self.apply(limits)
        })();
        if result.is_err() {
            fsutil::remove_dirs(&created);
        }
        result
    }

    fn join(&self) -> Result<super::Join> {
        std::fs::File::open(&self.dir)
            .map(|f| super::Join::Dir(f.into()))
            .map_err(|e| Error::Cgroup(format!("failed to open {}: {e}", self.dir.display())))
    }

    fn add_pid(&self, pid: i32) -> Result<()> {
        write(&self.dir, "cgroup.procs", &pid.to_string())
    }

    fn freeze(&self) -> Result<()> {
        write(&self.dir, "cgroup.freeze", "1")?;
        if crate::poll::poll_until(Duration::from_secs(5), || self.is_frozen()) {
            Ok(())
        } else {
            let _ = write(&self.dir, "cgroup.freeze", "0");
            Err(Error::Cgroup(format!(
                "{} did not freeze within 5s",
                self.dir.display()
            )))
        }
    }

    fn thaw(&self) -> Result<()> {
        write(&self.dir, "cgroup.freeze", "0")
    }

    fn is_frozen(&self) -> bool {
        keyed(&self.dir, "cgroup.events", "frozen") == Some(1)
    }

    fn stats(&self) -> Result<Stats> {
        let d = &self.dir;
        let max = |f: &str| read(d, f).and_then(|v| v.parse().ok());
        Ok(Stats {
            cpu_usage_ns: keyed(d, "cpu.stat", "usage_usec").unwrap_or(0) * 1000,
            memory_usage: read_u64(d, "memory.current").unwrap_or(0),
            memory_peak: read_u64(d, "memory.peak"),
            memory_limit: max("memory.max"),
            pids: read_u64(d, "pids.current").unwrap_or_else(|| fsutil::procs(d).len() as u64),
            pids_limit: max("pids.max"),
            oom_kills: self.oom_kills(),
        })
    }

    fn oom_kills(&self) -> u64 {
        keyed(&self.dir, "memory.events", "oom_kill").unwrap_or(0)
    }

    fn pids(&self) -> Vec<i32> {
        fsutil::procs(&self.dir)
    }

    fn kill_all(&self) -> Result<()> {
        // Gone, or nothing left in it or below it.
        if keyed(&self.dir, "cgroup.events", "populated").is_none_or(|n| n == 0) {
            return Ok(());
        }
        if self.dir.join("cgroup.kill").exists() {
            write(&self.dir, "cgroup.kill", "1")?;
        }
        fsutil::kill_procs(|| fsutil::procs(&self.dir), Duration::from_secs(10))
    }

    fn remove(&self) -> Result<()> {
        fsutil::rmdir_retry(&self.dir, Duration::from_secs(2))?;
        fsutil::remove_parent_if_empty(&self.dir);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_become_v2_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("memory.swap.max"), "").unwrap();
        let v = V2 {
            dir: d.path().to_path_buf(),
        };
        let l = Limits {
            memory: Some(64 << 20),
            memory_swap: Some(96 << 20),
            cpu_quota: Some((150_000, 100_000)),
            cpu_shares: Some(1024),
            cpuset_cpus: Some("1".into()),
            pids: Some(20),
        };
        v.apply(&l).unwrap();
        let get = |f: &str| read(d.path(), f).unwrap();
        assert_eq!(get("memory.max"), "67108864");
        assert_eq!(get("memory.swap.max"), (32u64 << 20).to_string());
        assert_eq!(get("cpu.max"), "150000 100000");
        assert_eq!(get("cpu.weight"), "39");
        assert_eq!(get("cpuset.cpus"), "1");
        assert_eq!(get("pids.max"), "20");
        v.apply(&Limits {
            memory_swap: Some(-1),
            pids: Some(-1),
            ..l
        })
        .unwrap();
        assert_eq!(get("memory.swap.max"), "max");
        assert_eq!(get("pids.max"), "max");
        assert_eq!(controllers_for(&Limits::default()), Vec::<&str>::new());
    }

    #[test]
    fn weight_conversion_matches_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
