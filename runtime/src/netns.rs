//! Pinned network namespaces: `<root>/netns/<id>` is a bind mount of the container's namespace, so
//! the namespace outlives the container's processes until tether has run CNI DEL in it. That makes
//! DEL complete even after the container exited while no `tether` was watching (the reference bridge
//! plugin removes its masquerade rules only when it can enter the namespace), and gives the CNI
//! cache a path that never comes to mean another process's namespace.

use crate::error::{Context, Result, at};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::path::{Path, PathBuf};

/// Bind-mounts `/proc/<pid>/ns/net` onto `<dir>/<id>`.
pub fn pin(dir: &Path, id: &str, pid: i32) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).ctx(at("create", dir))?;
    let target = dir.join(id);
    std::fs::File::create(&target).ctx(at("create", &target))?;
    crate::hook::kill_point("pin-file");
    let src = PathBuf::from(format!("/proc/{pid}/ns/net"));
    if let Err(e) = mount(
        Some(&src),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = std::fs::remove_file(&target);
        return Err(e).ctx(format!(
            "failed to pin the network namespace at {}",
            target.display()
        ));
    }
    Ok(target)
}

/// Whether `p` is (still) a mounted network namespace (the protocol's one nsfs check).
pub fn is_pinned(p: &Path) -> bool {
    cni::netns::is_netns(p)
}

/// Unmounts and removes a pin; idempotent.
pub fn unpin(p: &Path) -> Result<()> {
    while is_pinned(p) {
        umount2(p, MntFlags::MNT_DETACH).ctx(at("unmount", p))?;
    }
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).ctx(at("remove", p)),
        _ => Ok(()),
    }
}

/// In a new container's mount namespace: drops the copies of other containers' pins (made private,
/// they would otherwise keep those namespaces alive as long as this container runs).
pub fn drop_copies(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        if let Some(mp) = line.split(' ').nth(4)
            && mp.starts_with(&prefix)
        {
            let _ = umount2(mp, MntFlags::MNT_DETACH);
        }
    }
}

/// This thread in another network namespace until dropped. Coming back is not optional: every
/// later step (the pin, ADD, the state) would run in the wrong namespace, so if the return fails
/// `tether` aborts rather than carry on.
pub struct NetnsSwitch {
    own: std::fs::File,
}

impl NetnsSwitch {
    pub fn enter(target: &std::os::fd::OwnedFd) -> Result<NetnsSwitch> {
        let own = std::fs::File::open("/proc/thread-self/ns/net")
            .ctx("failed to open tether's own network namespace")?;
        nix::sched::setns(target, nix::sched::CloneFlags::CLONE_NEWNET)
            .ctx("failed to enter the target container's network namespace")?;
        Ok(NetnsSwitch { own })
    }
}

impl Drop for NetnsSwitch {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(&self.own, nix::sched::CloneFlags::CLONE_NEWNET) {
            eprintln!("tether: cannot return to its own network namespace: {e}");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> PathBuf {
        std::fs::read_link("/proc/thread-self/ns/net").unwrap()
    }

    /// Needs root (CAP_SYS_ADMIN), as every runtime test does. Runs on a thread of its own, whose
    /// namespace it changes.
    #[test]
    fn a_switch_returns_on_every_path() {
        std::thread::spawn(|| {
            let home = current();
            let home_fd: std::os::fd::OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")
                .unwrap()
                .into();
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let other = current();
            let other_fd: std::os::fd::OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")
                .unwrap()
                .into();
            nix::sched::setns(&home_fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            assert_ne!(home, other);
            {
                let _s = NetnsSwitch::enter(&other_fd).unwrap();
                assert_eq!(current(), other);
            }
            assert_eq!(current(), home);
            // An early return through `?` comes back too.
            let failing = || -> Result<()> {
                let _s = NetnsSwitch::enter(&other_fd)?;
                assert_eq!(current(), other);
                Err(crate::Error::usage("a later step failed"))
            };
            assert!(failing().is_err());
            assert_eq!(current(), home);
        })
        .join()
        .unwrap();
    }
}
