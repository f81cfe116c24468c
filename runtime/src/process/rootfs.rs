//! The container's root filesystem, mounted by its init before `pivot_root`:
//!
//! ```text
//! <rootfs>            bind-mounted onto itself (pivot_root needs a mount point)
//!   proc/             a fresh proc (the container's PID namespace)
//!   sys/              sysfs and the cgroup filesystem, read-only (kernfs.rs)
//!   dev/              tmpfs with the few devices, pts/, shm/, mqueue/ (devfs.rs)
//!   etc/hosts, hostname, resolv.conf   bound from <root>/containers/<id>/ (filled in by tether)
//! ```

use super::error::{ChildError, ChildResult, sys};
use super::{devfs, kernfs};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::path::{Path, PathBuf};

/// Refuses symlinks inside the rootfs where we mount: before pivot_root they would resolve against
/// the host's root.
fn no_symlink(p: &Path) -> ChildResult<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => Err(ChildError::Other(format!(
            "{} is a symlink; tether mounts over it and refuses to follow links out of the root filesystem",
            p.display()
        ))),
        _ => Ok(()),
    }
}

fn ensure_dir(p: &Path) -> ChildResult<()> {
    no_symlink(p)?;
    std::fs::create_dir_all(p)
        .map_err(|e| ChildError::Other(format!("create {}: {e}", p.display())))
}

fn ensure_file(p: &Path) -> ChildResult<()> {
    no_symlink(p)?;
    if !p.exists() {
        std::fs::File::create(p)
            .map_err(|e| ChildError::Other(format!("create {}: {e}", p.display())))?;
    }
    Ok(())
}

fn bind(src: &Path, dst: &Path, flags: MsFlags) -> ChildResult<()> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | flags,
        None::<&str>,
    )
    .map_err(sys(format!(
        "bind mount {} on {}",
        src.display(),
        dst.display()
    )))
}

/// The image's root: overlayfs of its layers (read-only, top first) and the container's upper
/// and work directories, mounted on `root` in the container's own mount namespace.
pub(super) fn mount_overlay(m: &crate::state::ImageMount, root: &Path) -> ChildResult<()> {
    let lowers: Vec<String> = m.lowers.iter().map(|p| p.display().to_string()).collect();
    // Without redirect_dir and metacopy, the upper dir is self-contained (renamed directories
    // are copied up, data is copied with metadata): diff and commit read it as plain files.
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
        lowers.join(":"),
        m.upper.display(),
        m.work.display()
    );
    // The kernel takes one page of mount options.
    if opts.len() >= 4096 {
        return Err(ChildError::Other(format!(
            "the image has too many layers ({}) for one overlayfs mount's options",
            lowers.len()
        )));
    }
    mount(
        Some("overlay"),
        root,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(sys(format!("mount overlayfs on {}", root.display())))
}

pub(super) fn setup(
    root: &Path,
    etc_files: &[(PathBuf, String)],
    sys_opts: kernfs::SysOpts,
    dev_opts: devfs::DevOpts,
) -> ChildResult<()> {
    // pivot_root needs the new root to be a mount point.
    bind(root, root, MsFlags::MS_REC)?;
    let proc_dir = root.join("proc");
    ensure_dir(&proc_dir)?;
    kernfs::mount_proc(&proc_dir)?;
    let sysfs = root.join("sys");
    ensure_dir(&sysfs)?;
    kernfs::mount_sys(&sysfs, sys_opts)?;
    let dev = root.join("dev");
    ensure_dir(&dev)?;
    devfs::mount_dev(&dev, dev_opts)?;
    let etc = root.join("etc");
    ensure_dir(&etc)?;
    for (src, name) in etc_files {
        let dst = etc.join(name);
        ensure_file(&dst)?;
        bind(src, &dst, MsFlags::empty())?;
    }
    nix::unistd::chdir(root).map_err(sys(format!("chdir {}", root.display())))?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only the new.
    nix::unistd::pivot_root(".", ".")
        .map_err(sys(format!("pivot_root into {}", root.display())))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(sys("chdir /"))?;
    // Then masks.rs, in the new root.
    Ok(())
}
