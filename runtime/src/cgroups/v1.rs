//! cgroup v1: one directory per controller hierarchy.

use super::fsutil::{self, keyed, read, read_u64, write};
use super::{CgroupRecord, Limits, Stats, Version};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct V1 {
    /// Controller to directory. Co-mounted controllers share a directory.
    paths: BTreeMap<String, PathBuf>,
}

/// The controllers a set of limits needs, with the flag that needs it (for the error message).
pub(crate) fn controllers_for(l: &Limits) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("freezer", "pause")];
    if l.memory.is_some() || l.memory_swap.is_some() {
        v.push(("memory", "--memory"));
    }
    if l.cpu_quota.is_some() || l.cpu_shares.is_some() {
        v.push(("cpu", "--cpus/--cpu-shares"));
    }
    if l.cpuset_cpus.is_some() {
        v.push(("cpuset", "--cpuset-cpus"));
    }
    if l.pids.is_some() {
        v.push(("pids", "--pids-limit"));
    }
    v
}

impl V1 {
    pub fn from_record(rec: &CgroupRecord) -> V1 {
        V1 {
            paths: rec.paths.clone(),
        }
    }

    fn dir(&self, ctrl: &str) -> Option<&Path> {
        self.paths.get(ctrl).map(PathBuf::as_path)
    }

    fn unique_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.paths.values().cloned().collect();
        v.sort();
        v.dedup();
        v
    }

    /// A new cpuset cgroup starts with no CPUs and no memory nodes; copy the parent's.
    fn init_cpuset(dir: &Path) -> Result<()> {
        let parent = dir.parent().expect("cgroup dir has a parent");
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if read(dir, f).is_some_and(|s| s.is_empty()) {
                let v = read(parent, f).unwrap_or_default();
                write(dir, f, &v)?;
            }
        }
        Ok(())
    }

    fn apply(&self, l: &Limits) -> Result<()> {
        if let (Some(d), Some(m)) = (self.dir("memory"), l.memory) {
            write(d, "memory.limit_in_bytes", &m.to_string())?;
            let memsw = d.join("memory.memsw.limit_in_bytes").exists();
            match l.memory_swap {
                Some(s) if memsw => write(d, "memory.memsw.limit_in_bytes", &s.to_string())?,
                // Docker's default: as much swap as memory.
                None if memsw => write(
                    d,
                    "memory.memsw.limit_in_bytes",
                    &m.saturating_mul(2).to_string(),
                )?,
                Some(_) => {
                    return Err(Error::Cgroup(
                        "--memory-swap needs swap accounting (memory.memsw.*), which this kernel does not offer".into(),
                    ));
                }
                None => {}
            }
        }
        if let Some(d) = self.dir("cpu") {
            if let Some((quota, period)) = l.cpu_quota {
                write(d, "cpu.cfs_period_us", &period.to_string())?;
                write(d, "cpu.cfs_quota_us", &quota.to_string())?;
            }
            if let Some(s) = l.cpu_shares {
                write(d, "cpu.shares", &s.to_string())?;
            }
        }
        if let (Some(d), Some(cpus)) = (self.dir("cpuset"), &l.cpuset_cpus) {
            write(d, "cpuset.cpus", cpus)?;
        }
        if let (Some(d), Some(p)) = (self.dir("pids"), l.pids) {
            let v = if p < 0 {
                "max".to_string()
            } else {
                p.to_string()
            };
            write(d, "pids.max", &v)?;
        }
        Ok(())
    }

    fn freeze_within(&self, timeout: Duration) -> Result<()> {
        let d = self
            .dir("freezer")
            .ok_or_else(|| Error::Cgroup("the v1 freezer controller is not mounted".into()))?;
        write(d, "freezer.state", "FROZEN")?;
        let state = || read(d, "freezer.state");
        // A cgroup removed meanwhile ends the wait too.
        crate::poll::poll_until(timeout, || state().is_none_or(|s| s == "FROZEN"));
        match state() {
            Some(s) if s == "FROZEN" => Ok(()),
            None => Err(Error::Cgroup(format!("{} is gone", d.display()))),
            Some(_) => {
                let _ = write(d, "freezer.state", "THAWED");
                Err(Error::Cgroup(format!(
                    "{} did not reach FROZEN within {timeout:?}",
                    d.display()
                )))
            }
        }
    }

    fn procs_dir(&self) -> Option<&Path> {
        ["freezer", "pids", "memory", "cpu"]
            .iter()
            .find_map(|c| self.dir(c))
            .or_else(|| self.paths.values().next().map(PathBuf::as_path))
    }
}

impl super::Cgroup for V1 {
    fn record(&self) -> CgroupRecord {
        CgroupRecord {
            version: Version::V1,
            paths: self.paths.clone(),
        }
    }

    fn create(&self, limits: &Limits) -> Result<()> {
        let mut created: Vec<PathBuf> = Vec::new();
        let mountpoints = super::mountpoints();
        let result = (|| {
            for (ctrl, dir) in &self.paths {
                if dir.exists() {
                    // Co-mounted controller already made, or a leftover: reuse only if empty.
                    if !fsutil::procs(dir).is_empty() {
                        return Err(Error::Cgroup(format!(
                            "{} already exists and has processes",
                            dir.display()
                        )));
                    }
                    continue;
                }
                let mount = super::mount_of(dir, &mountpoints).ok_or_else(|| {
                    Error::Cgroup(format!("{} is on no cgroup mount", dir.display()))
                })?;
                let is_cpuset = ctrl == "cpuset";
                // A concurrent `rm` may remove an empty shared parent between our mkdirs: retry.
                let mut attempts = 0;
                loop {
                    match fsutil::create_dirs(&mount, dir, |d| {
                        if is_cpuset {
                            Self::init_cpuset(d)
                        } else {
                            Ok(())
                        }
                    }) {
                        Ok(mut made) => {
                            created.append(&mut made);
                            break;
                        }
                        Err(_) if attempts < 5 && !dir.exists() => attempts += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
            self.apply(limits)
        })();
        if result.is_err() {
            // Leaves first, then the parents we made.
            created.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for d in &created {
                let _ = std::fs::remove_dir(d);
            }
        }
        result
    }

    fn join(&self) -> Result<super::Join> {
        self.unique_dirs()
            .iter()
            .map(|d| fsutil::open_write(d, "tasks"))
            .collect::<Result<_>>()
            .map(super::Join::Tasks)
    }

    fn add_pid(&self, pid: i32) -> Result<()> {
        for d in self.unique_dirs() {
            write(&d, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn freeze(&self) -> Result<()> {
        self.freeze_within(Duration::from_secs(5))
    }

    fn thaw(&self) -> Result<()> {
        let d = self
            .dir("freezer")
            .ok_or_else(|| Error::Cgroup("the v1 freezer controller is not mounted".into()))?;
        write(d, "freezer.state", "THAWED")
    }

    fn is_frozen(&self) -> bool {
        self.dir("freezer")
            .and_then(|d| read(d, "freezer.state"))
            .is_some_and(|s| s != "THAWED")
    }

    fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        if let Some(d) = self.dir("cpuacct") {
            s.cpu_usage_ns = read_u64(d, "cpuacct.usage").unwrap_or(0);
        }
        if let Some(d) = self.dir("memory") {
            s.memory_usage = read_u64(d, "memory.usage_in_bytes").unwrap_or(0);
            s.memory_peak = read_u64(d, "memory.max_usage_in_bytes");
            // "Unlimited" is a huge page-rounded number in v1.
            s.memory_limit = read_u64(d, "memory.limit_in_bytes").filter(|v| *v < (1 << 62));
        }
        if let Some(d) = self.dir("pids") {
            s.pids = read_u64(d, "pids.current").unwrap_or(0);
            s.pids_limit = read_u64(d, "pids.max");
        } else if let Some(d) = self.procs_dir() {
            s.pids = fsutil::procs(d).len() as u64;
        }
        s.oom_kills = self.oom_kills();
        Ok(s)
    }

    fn oom_kills(&self) -> u64 {
        self.dir("memory")
            .and_then(|d| keyed(d, "memory.oom_control", "oom_kill"))
            .unwrap_or(0)
    }

    fn pids(&self) -> Vec<i32> {
        self.procs_dir().map(fsutil::procs).unwrap_or_default()
    }

    fn kill_all(&self) -> Result<()> {
        let Some(d) = self.procs_dir().map(Path::to_path_buf) else {
            return Ok(());
        };
        // Gone or already empty (the usual case: the init died and took its PID namespace with
        // it): no freeze and thaw round trip.
        if fsutil::procs(&d).is_empty() {
            return Ok(());
        }
        // Freeze first so that nothing forks between listing and killing; frozen tasks still die
        // of SIGKILL once thawed. Tasks busy exiting never freeze: then the kill loop below is
        // left to catch forks, rather than waiting out a pause's patience.
        let frozen =
            self.dir("freezer").is_some() && self.freeze_within(Duration::from_millis(100)).is_ok();
        for p in fsutil::procs(&d) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if frozen {
            self.thaw()?;
        }
        fsutil::kill_procs(|| fsutil::procs(&d), Duration::from_secs(10))
    }

    fn remove(&self) -> Result<()> {
        let mut first = None;
        for d in self.unique_dirs() {
            if let Err(e) = fsutil::rmdir_retry(&d, Duration::from_secs(2)) {
                first.get_or_insert(e);
            } else {
                fsutil::remove_parent_if_empty(&d);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The controller files a v1 hierarchy offers, in a temp dir.
    fn fixture(files: &[&str]) -> (tempfile::TempDir, V1) {
        let d = tempfile::tempdir().unwrap();
        let mut paths = BTreeMap::new();
        for c in ["memory", "cpu", "cpuset", "pids"] {
            let dir = d.path().join(c);
            std::fs::create_dir(&dir).unwrap();
            for f in files {
                std::fs::write(dir.join(f), "").unwrap();
            }
            paths.insert(c.to_string(), dir);
        }
        (d, V1 { paths })
    }

    fn get(v: &V1, c: &str, f: &str) -> String {
        read(v.dir(c).unwrap(), f).unwrap()
    }

    #[test]
    fn limits_become_v1_files() {
        let (_d, v) = fixture(&["memory.memsw.limit_in_bytes"]);
        let l = Limits {
            memory: Some(64 << 20),
            memory_swap: None,
            cpu_quota: Some((50_000, 100_000)),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0-1".into()),
            pids: Some(-1),
        };
        v.apply(&l).unwrap();
        assert_eq!(get(&v, "memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(
            get(&v, "memory", "memory.memsw.limit_in_bytes"),
            "134217728"
        );
        assert_eq!(get(&v, "cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(get(&v, "cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(get(&v, "cpu", "cpu.shares"), "512");
        assert_eq!(get(&v, "cpuset", "cpuset.cpus"), "0-1");
        assert_eq!(get(&v, "pids", "pids.max"), "max");
        let l = Limits {
            memory_swap: Some(-1),
            ..l
        };
        v.apply(&l).unwrap();
        assert_eq!(get(&v, "memory", "memory.memsw.limit_in_bytes"), "-1");
    }

    #[test]
    fn swap_without_swap_accounting_is_an_error() {
        let (_d, v) = fixture(&[]);
        let l = Limits {
            memory: Some(64 << 20),
            memory_swap: Some(128 << 20),
            ..Default::default()
        };
        assert!(
            v.apply(&l)
                .unwrap_err()
                .to_string()
                .contains("swap accounting")
        );
        // Without --memory-swap the missing files are fine.
        v.apply(&Limits {
            memory_swap: None,
            ..l
        })
        .unwrap();
    }
}
