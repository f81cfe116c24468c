//! cgroups v1 and v2 behind one trait.
//!
//! Detection follows youki: `statfs(/sys/fs/cgroup)` says cgroup2 on a unified host; tmpfs means
//! legacy or hybrid (v1 controllers, maybe a controller-less v2 beside them). Mount points come from
//! `/proc/self/mountinfo`, because controllers are not always mounted where their name suggests (on some
//! hosts `cpu` and `cpuacct` are one mount, on others two).
//!
//! A container's cgroup is `<parent>/<id>` in each hierarchy. A parent with a leading `/` is absolute;
//! otherwise it is relative to tether's own cgroup (Docker's `--cgroup-parent` rule).

pub mod devices;
mod fsutil;
mod limits;
mod v1;
mod v2;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub use limits::{LimitFlags, Limits};
pub use v1::V1;
pub use v2::V2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// Which backend the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Manager {
    /// v2 on a unified host, or on a hybrid host whose v2 hierarchy has the controllers; else v1.
    #[default]
    Auto,
    /// One directory per v1 controller hierarchy (memory, cpu, cpuacct, cpuset, pids, freezer)
    V1,
    /// One directory in the unified hierarchy
    V2,
}

/// What a container's cgroup is, persisted in its state so any later `tether` can manage it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRecord {
    pub version: Version,
    /// Controller (or `unified`) to directory.
    pub paths: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub memory_usage: u64,
    pub memory_peak: Option<u64>,
    pub memory_limit: Option<u64>,
    pub pids: u64,
    pub pids_limit: Option<u64>,
    pub oom_kills: u64,
}

/// How a new container init enters its cgroup as it starts, so that nobody has to move it there.
///
/// Writing another process's pid to `cgroup.procs` takes the kernel's global threadgroup lock for
/// writing, which waits for an RCU grace period: 6 to 30 ms, more than the rest of `tether run`'s
/// own work together. A single-threaded process moving itself (writing "0" to a v1 `tasks` file) and
/// `clone3(CLONE_INTO_CGROUP)` (v2) do not take that lock.
#[derive(Debug)]
pub enum Join {
    /// v1: the `tasks` file of each hierarchy, opened by the parent, so the write is checked
    /// against the parent's credentials even when the child is in a new user namespace; the child
    /// writes "0" to each before it waits for the go-ahead.
    Tasks(Vec<OwnedFd>),
    /// v2: the cgroup's directory, for `clone3(CLONE_INTO_CGROUP)`.
    Dir(OwnedFd),
}

/// The operations tether needs from a cgroup, whatever the version.
pub trait Cgroup: Send + Sync {
    fn record(&self) -> CgroupRecord;
    /// Creates the directories and applies `limits`; on error removes what it made.
    fn create(&self, limits: &Limits) -> Result<()>;
    /// Opens what a new process needs to start inside this (created) cgroup.
    fn join(&self) -> Result<Join>;
    /// Moves a running process here (slow: see [`Join`]).
    fn add_pid(&self, pid: i32) -> Result<()>;
    fn freeze(&self) -> Result<()>;
    fn thaw(&self) -> Result<()>;
    fn is_frozen(&self) -> bool;
    fn stats(&self) -> Result<Stats>;
    /// How many processes the OOM killer killed in this cgroup.
    fn oom_kills(&self) -> u64;
    fn pids(&self) -> Vec<i32>;
    /// SIGKILLs every process and waits until the cgroup is empty.
    fn kill_all(&self) -> Result<()>;
    /// Removes the directories (idempotent), then the parent if it became empty.
    fn remove(&self) -> Result<()>;
}

pub fn open(rec: &CgroupRecord) -> Box<dyn Cgroup> {
    match rec.version {
        Version::V1 => Box::new(V1::from_record(rec)),
        Version::V2 => Box::new(V2::from_record(rec)),
    }
}

/// A cgroup filesystem mount from mountinfo.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mount {
    pub mountpoint: PathBuf,
    /// The hierarchy path mounted there (`/` unless the host bind-mounted a sub-tree).
    pub root: String,
}

impl Mount {
    /// The directory of hierarchy path `cg` (absolute within the hierarchy).
    pub fn dir(&self, cg: &str) -> PathBuf {
        let rel = cg.strip_prefix(self.root.as_str()).unwrap_or(cg);
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            self.mountpoint.clone()
        } else {
            self.mountpoint.join(rel)
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Mounts {
    /// v1 controller name to its mount.
    pub v1: BTreeMap<String, Mount>,
    pub v2: Option<Mount>,
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn parse_mountinfo(text: &str) -> Mounts {
    let mut m = Mounts::default();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let mount = Mount {
            mountpoint: PathBuf::from(unescape(l[4])),
            root: unescape(l[3]),
        };
        match r[0] {
            "cgroup2" if m.v2.is_none() => m.v2 = Some(mount),
            "cgroup" => {
                for opt in r[2].split(',') {
                    if V1_CONTROLLERS.contains(&opt) {
                        m.v1.entry(opt.to_string()).or_insert_with(|| mount.clone());
                    }
                }
            }
            _ => {}
        }
    }
    m
}

/// The v1 controllers tether uses.
pub(crate) const V1_CONTROLLERS: [&str; 7] = [
    "memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "devices",
];
/// The v2 controllers tether enables.
pub(crate) const V2_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuset", "pids"];

/// This process's cgroup per v1 controller and in the v2 hierarchy (`/proc/self/cgroup`).
pub(crate) fn own_cgroups(text: &str) -> (BTreeMap<String, String>, Option<String>) {
    let mut v1 = BTreeMap::new();
    let mut v2 = None;
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        } else {
            for c in ctrls.split(',') {
                v1.insert(c.to_string(), path.to_string());
            }
        }
    }
    (v1, v2)
}

fn join_cg(base: &str, rel: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), rel.trim_matches('/'))
}

fn unified_host() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

fn v2_controllers(mounts: &Mounts) -> Vec<String> {
    mounts
        .v2
        .as_ref()
        .map(|m| fsutil::read_words(&m.mountpoint.join("cgroup.controllers")))
        .unwrap_or_default()
}

/// v2 on a unified host, or when the v2 hierarchy has the controllers tether needs; else v1.
fn choose(manager: Manager, mounts: &Mounts, v2_controllers: &[String]) -> Version {
    match manager {
        Manager::V1 => Version::V1,
        Manager::V2 => Version::V2,
        Manager::Auto if unified_host() => Version::V2,
        Manager::Auto => {
            let needed = ["memory", "cpu", "pids"];
            if mounts.v2.is_some() && needed.iter().all(|c| v2_controllers.iter().any(|x| x == c)) {
                Version::V2
            } else {
                Version::V1
            }
        }
    }
}

/// The version `manager` resolves to on this host.
pub fn resolve(manager: Manager) -> Version {
    let mounts =
        parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    choose(manager, &mounts, &v2_controllers(&mounts))
}

/// Chooses the backend and computes the directories of container `id`, without creating anything.
pub fn plan(
    manager: Manager,
    parent: Option<&str>,
    id: &str,
    limits: &Limits,
) -> Result<CgroupRecord> {
    let mounts =
        parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let (own_v1, own_v2) =
        own_cgroups(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    let v2_controllers = v2_controllers(&mounts);
    let version = choose(manager, &mounts, &v2_controllers);
    match version {
        Version::V2 => {
            let m = mounts.v2.as_ref().ok_or_else(|| {
                Error::Cgroup("no cgroup2 hierarchy is mounted; use --cgroup-manager v1".into())
            })?;
            let wanted = v2::controllers_for(limits);
            if let Some(missing) = wanted
                .iter()
                .find(|c| !v2_controllers.iter().any(|x| x == *c))
            {
                return Err(Error::Cgroup(format!(
                    "the {missing} controller is not available in the cgroup v2 hierarchy at {} (cgroup.controllers: {:?}); \
                     on a hybrid host use --cgroup-manager v1 (or auto)",
                    m.mountpoint.display(),
                    v2_controllers.join(" ")
                )));
            }
            // v2 forbids processes in inner cgroups, so a parent under our own (populated) cgroup
            // would rarely work: the default is absolute.
            let parent = parent.unwrap_or("/tether");
            let base = if parent.starts_with('/') {
                parent.to_string()
            } else {
                join_cg(own_v2.as_deref().unwrap_or("/"), parent)
            };
            let dir = m.dir(&join_cg(&base, id));
            Ok(CgroupRecord {
                version,
                paths: BTreeMap::from([("unified".to_string(), dir)]),
            })
        }
        Version::V1 => {
            if mounts.v1.is_empty() {
                return Err(Error::Cgroup(
                    "no cgroup v1 controllers are mounted; use --cgroup-manager v2".into(),
                ));
            }
            for (needed, what) in v1::controllers_for(limits) {
                if !mounts.v1.contains_key(needed) {
                    return Err(Error::Cgroup(format!(
                        "{what} needs the cgroup v1 {needed} controller, which is not mounted"
                    )));
                }
            }
            let parent = parent.unwrap_or("tether");
            let mut paths = BTreeMap::new();
            for (ctrl, m) in &mounts.v1 {
                let base = if parent.starts_with('/') {
                    parent.to_string()
                } else {
                    join_cg(own_v1.get(ctrl).map_or("/", String::as_str), parent)
                };
                paths.insert(ctrl.clone(), m.dir(&join_cg(&base, id)));
            }
            Ok(CgroupRecord { version, paths })
        }
    }
}

/// The mount points of every cgroup hierarchy tether uses.
pub(crate) fn mountpoints() -> Vec<PathBuf> {
    let mounts =
        parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    mounts
        .v1
        .into_values()
        .chain(mounts.v2)
        .map(|m| m.mountpoint)
        .collect()
}

/// Which of `mountpoints` a directory belongs to (for walking up to the root when creating).
pub(crate) fn mount_of(dir: &Path, mountpoints: &[PathBuf]) -> Option<PathBuf> {
    mountpoints
        .iter()
        .filter(|mp| dir.starts_with(mp))
        .max_by_key(|mp| mp.as_os_str().len())
        .cloned()
}

/// The cgroup setup of this host, for `tether info`-style messages.
pub fn describe_host() -> String {
    let mounts =
        parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    if unified_host() {
        "unified (cgroup v2 only)".into()
    } else if mounts.v2.is_some() {
        format!(
            "hybrid (v1 controllers: {}; plus a cgroup2 hierarchy)",
            mounts.v1.keys().cloned().collect::<Vec<_>>().join(",")
        )
    } else {
        "legacy (cgroup v1)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:2 - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpuacct
33 30 0:29 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
36 30 0:32 / /mnt/with\\040space rw - cgroup cgroup rw,pids
";

    #[test]
    fn mountinfo_finds_each_controller_and_the_unified_mount() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.v1["cpu"].mountpoint, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(
            m.v1["cpuacct"].mountpoint,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(m.v1["pids"].mountpoint, PathBuf::from("/mnt/with space"));
        assert!(!m.v1.contains_key("name=systemd"));
        assert_eq!(
            m.v2.as_ref().unwrap().mountpoint,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        // A bind-mounted sub-tree: hierarchy paths are relative to the mount's root.
        assert_eq!(
            m.v1["memory"].dir("/docker/abc/tether/x"),
            PathBuf::from("/sys/fs/cgroup/memory/tether/x")
        );
    }

    #[test]
    fn own_cgroup_lines() {
        let (v1, v2) = own_cgroups("4:memory:/a/b\n2:cpu,cpuacct:/\n0::/init.scope\n");
        assert_eq!(v1["memory"], "/a/b");
        assert_eq!(v1["cpuacct"], "/");
        assert_eq!(v2.as_deref(), Some("/init.scope"));
        assert_eq!(join_cg("/a/b", "tether"), "/a/b/tether");
        assert_eq!(join_cg("/", "/x/"), "/x");
    }
}
