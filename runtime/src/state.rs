//! Container state on disk: `<root>/containers/<id>/state.json`, written atomically and guarded by a
//! per-container `flock`, so that `tether rm` can finish what a killed `tether run` left behind.

use crate::cgroups::devices::Device;
use crate::cgroups::{CgroupRecord, Limits};
use crate::error::{Context, Error, Result, at};
use crate::network::NetworkRecord;
pub use crate::paths::Paths;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being set up; a crash here leaves a state that `rm` cleans.
    Creating,
    Running,
    Paused,
    Exited,
    /// Marked running, but the process is gone and nobody recorded its exit (tether was killed).
    Dead,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Exited => "exited",
            Status::Dead => "dead",
        };
        f.write_str(s)
    }
}

/// A process identified by pid and start time, so a reused pid is never mistaken for ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcRef {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcRef {
    pub fn of(pid: i32) -> Option<ProcRef> {
        proc_start_time(pid).map(|start_time| ProcRef { pid, start_time })
    }

    /// True while the process exists, is not a zombie and is the one we recorded.
    pub fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }
}

/// (state letter, start time in clock ticks) from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

pub fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, t)| t)
}

/// A user namespace mapping: container ids `0..size` are host ids `host_id..host_id+size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdMap {
    pub host_id: u32,
    pub size: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub command: Vec<String>,
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    pub hostname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userns: Option<IdMap>,
    pub limits: Limits,
    pub auto_remove: bool,
    pub detached: bool,
    /// `-i`: stdin kept open (else /dev/null).
    #[serde(default)]
    pub interactive: bool,
    /// `-t`: a pseudo-terminal as stdin, stdout and stderr.
    #[serde(default)]
    pub tty: bool,
    /// Capabilities, seccomp, no_new_privs, user (`confine`); `confinement.privileged` is
    /// `--privileged`. Absent in older records: full root, as they ran.
    #[serde(default)]
    pub confinement: crate::confine::Confinement,
    /// The filesystem and device confinement (records made before it have the defaults).
    #[serde(default)]
    pub fs: FsConfinement,
    /// Run from an image: the overlayfs root (`rootfs` is its mount point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageMount>,
}

/// A container's root as an overlayfs of an image's layers and its own writable layer, mounted by
/// its init (process/rootfs.rs) before pivot_root. Paths are absolute.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageMount {
    /// The image id (`sha256:...`) and the name it was run by.
    pub id: String,
    pub reference: String,
    /// The layers' trees, top first (overlayfs `lowerdir` order).
    pub lowers: Vec<PathBuf>,
    /// `<container dir>/upper`: the container's writes (`tether diff`, `tether commit`).
    pub upper: PathBuf,
    /// `<container dir>/work`: overlayfs's scratch directory on the upper's filesystem.
    pub work: PathBuf,
}

impl Config {
    /// `--privileged`: every capability and no seccomp (confine/), and no filesystem or device
    /// confinement (process/masks.rs, devfs.rs, kernfs.rs, cgroups/devices/).
    pub fn privileged(&self) -> bool {
        self.confinement.privileged
    }
}

/// What the container's mounts and device cgroup confine: see `process/masks.rs`,
/// `process/devfs.rs` and `cgroups/devices/`. Empty lists when `--privileged`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FsConfinement {
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// `--read-only`: the root filesystem is mounted read-only.
    pub read_only_root: bool,
    /// `--device`s: nodes in the container's /dev, allowed in its device cgroup.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// `--cgroupns private`: the container's own cgroup is the root of what it sees.
    pub cgroupns_private: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_start_time: Option<u64>,
    /// The `tether` process that waits for the container and cleans up when it exits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<ProcRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Whether the network, cgroup and processes were cleaned up after the container stopped.
    #[serde(default)]
    pub cleaned: bool,
    /// Why the container is dead or why cleanup was incomplete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub state: RunState,
    pub config: Config,
    /// Namespace kind to identity (`net:[4026532...]`), read when the container started.
    pub namespaces: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<CgroupRecord>,
    pub network: NetworkRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
}

impl ContainerState {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    pub fn process(&self) -> Option<ProcRef> {
        Some(ProcRef {
            pid: self.state.pid?,
            start_time: self.state.pid_start_time?,
        })
    }

    /// The container's init process, if it is still the one we started.
    pub fn live_process(&self) -> Option<ProcRef> {
        self.process().filter(ProcRef::alive)
    }

    /// The status with reality applied: a running container whose process is gone is `dead`.
    pub fn effective_status(&self) -> Status {
        match self.state.status {
            Status::Running | Status::Paused if self.live_process().is_none() => Status::Dead,
            Status::Creating
                if self.live_process().is_none()
                    && !self.state.supervisor.is_some_and(|s| s.alive()) =>
            {
                Status::Dead
            }
            s => s,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.effective_status(), Status::Running | Status::Paused)
    }
}

/// The state files of one container.
pub struct Store<'a> {
    pub paths: &'a Paths,
}

impl Store<'_> {
    fn state_file(&self, id: &str) -> PathBuf {
        self.paths.container_dir(id).join("state.json")
    }

    pub fn load(&self, id: &str) -> Result<ContainerState> {
        let p = self.state_file(id);
        let b = std::fs::read(&p).ctx(at("read", &p))?;
        serde_json::from_slice(&b).map_err(|source| Error::State {
            path: p.display().to_string(),
            source,
        })
    }

    pub fn save(&self, s: &ContainerState) -> Result<()> {
        let _span = tracing::debug_span!("state_save", status = %s.state.status).entered();
        let p = self.state_file(&s.id);
        let b = serde_json::to_vec_pretty(s).expect("state serializes");
        crate::atomic::write_replacing(&p, &b).ctx(at("write", &p))
    }

    /// Every container, oldest first. Unreadable entries are skipped with a warning.
    pub fn list(&self) -> Vec<ContainerState> {
        let Ok(rd) = std::fs::read_dir(self.paths.containers()) else {
            return Vec::new();
        };
        let mut v: Vec<ContainerState> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                match self.load(&id) {
                    Ok(s) => Some(s),
                    Err(err) => {
                        tracing::debug!(%id, %err, "skipping container without readable state");
                        None
                    }
                }
            })
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }

    /// Finds a container by exact name, exact id or unique id prefix.
    pub fn find(&self, name_or_id: &str) -> Result<ContainerState> {
        let all = self.list();
        if let Some(s) = all
            .iter()
            .find(|s| s.name == name_or_id || s.id == name_or_id)
        {
            return Ok(s.clone());
        }
        let by_prefix: Vec<&ContainerState> = all
            .iter()
            .filter(|s| name_or_id.len() >= 3 && s.id.starts_with(name_or_id))
            .collect();
        match by_prefix.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::usage(format!(
                "no such container: {name_or_id} (see `tether ps -a`)"
            ))),
            _ => Err(Error::usage(format!(
                "{name_or_id} matches several containers: use more of the id or the name"
            ))),
        }
    }
}

/// An exclusive `flock` held until dropped.
pub struct Lock {
    _file: nix::fcntl::Flock<File>,
}

impl Lock {
    pub fn acquire(path: &Path) -> Result<Lock> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).ctx(at("create", parent))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .ctx(at("open lock", path))?;
        loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive) {
                Ok(f) => return Ok(Lock { _file: f }),
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(e).ctx(at("lock", path)),
            }
        }
    }
}

/// The root-wide lock that serializes name reservation and port checks.
pub fn root_lock(paths: &Paths) -> Result<Lock> {
    Lock::acquire(&paths.root.join("lock"))
}

/// The lock of one container's state.
pub fn container_lock(paths: &Paths, id: &str) -> Result<Lock> {
    Lock::acquire(&paths.containers().join(format!(".{id}.lock")))
}

/// 64 random hex digits.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; 32];
    let mut f = File::open("/dev/urandom").ctx("failed to open /dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut b).ctx("failed to read /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Container names follow Docker's rule.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid container name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

/// Now as RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn own_process_is_alive_and_start_time_matters() {
        let me = ProcRef::of(std::process::id() as i32).unwrap();
        assert!(me.alive());
        let other = ProcRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.alive());
    }

    #[test]
    fn names() {
        assert!(validate_name("web-1.a_b").is_ok());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("").is_err());
    }
}
