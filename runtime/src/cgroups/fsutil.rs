//! Small helpers for cgroupfs files: every write error names the value and the file.

use crate::error::{Error, Result};
use crate::poll::poll_until as wait_for;
use std::path::Path;
use std::time::Duration;

pub fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, value)
        .map_err(|e| Error::Cgroup(format!("failed to write {value:?} to {}: {e}", p.display())))
}

/// Opens a cgroup file for writing (close-on-exec, as every std open).
pub fn open_write(dir: &Path, file: &str) -> Result<std::os::fd::OwnedFd> {
    let p = dir.join(file);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .map(Into::into)
        .map_err(|e| Error::Cgroup(format!("failed to open {}: {e}", p.display())))
}

pub fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file)?.parse().ok()
}

pub fn read_words(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The value of `key` in a flat-keyed file (`memory.events`, `cpu.stat`, `memory.oom_control`).
pub fn keyed(dir: &Path, file: &str, key: &str) -> Option<u64> {
    read(dir, file)?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

pub fn procs(dir: &Path) -> Vec<i32> {
    read(dir, "cgroup.procs")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Creates `dir` and any missing ancestors below `mount`, calling `init` on each new directory
/// (top-down) before its children are made. Returns the directories it created, top-down.
pub fn create_dirs(
    mount: &Path,
    dir: &Path,
    mut init: impl FnMut(&Path) -> Result<()>,
) -> Result<Vec<std::path::PathBuf>> {
    let rel = dir.strip_prefix(mount).map_err(|_| {
        Error::Cgroup(format!(
            "{} is not under {}",
            dir.display(),
            mount.display()
        ))
    })?;
    let mut created = Vec::new();
    let mut cur = mount.to_path_buf();
    for comp in rel.components() {
        cur.push(comp);
        match std::fs::create_dir(&cur) {
            Ok(()) => {
                created.push(cur.clone());
                if let Err(e) = init(&cur) {
                    remove_dirs(&created);
                    return Err(e);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                remove_dirs(&created);
                return Err(Error::Cgroup(format!(
                    "failed to create {}: {e}",
                    cur.display()
                )));
            }
        }
    }
    Ok(created)
}

/// Removes directories bottom-up, ignoring ones already gone.
pub fn remove_dirs(dirs: &[std::path::PathBuf]) {
    for d in dirs.iter().rev() {
        let _ = rmdir_retry(d, Duration::from_millis(0));
    }
}

/// `rmdir` that retries EBUSY while the last processes finish exiting.
pub fn rmdir_retry(dir: &Path, patience: Duration) -> Result<()> {
    let mut busy = None;
    let removed = wait_for(patience, || match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::debug!(dir = %dir.display(), %e, "cgroup not removable yet");
            busy = Some(e);
            false
        }
    });
    match busy.filter(|_| !removed) {
        None => Ok(()),
        Some(e) => Err(Error::Cgroup(format!(
            "failed to remove {}: {e}",
            dir.display()
        ))),
    }
}

/// Removes the parent of a container cgroup if nothing else lives there any more. Failures mean
/// another container still uses it.
pub fn remove_parent_if_empty(dir: &Path) {
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

/// SIGKILLs the pids listed until none are left.
pub fn kill_procs(list: impl Fn() -> Vec<i32>, timeout: Duration) -> Result<()> {
    let empty = wait_for(timeout, || {
        let pids = list();
        for p in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        pids.is_empty()
    });
    if empty {
        Ok(())
    } else {
        Err(Error::Cgroup(format!(
            "processes {:?} are still alive after SIGKILL",
            list()
        )))
    }
}
