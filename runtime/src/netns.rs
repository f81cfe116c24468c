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
