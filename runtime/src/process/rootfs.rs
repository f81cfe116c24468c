//! The container's root filesystem, mounted by its init before `pivot_root`:
//!
//! ```text
//! <rootfs>            bind-mounted onto itself (pivot_root needs a mount point)
//!   proc/             a fresh proc (the container's PID namespace)
//!   sys/              sysfs, read-only, when the network namespace allows it
//!   dev/              tmpfs: null zero full random urandom tty bound from the host, fd links, shm/
//!   etc/hosts, hostname, resolv.conf   bound from <root>/containers/<id>/ (filled in by tether)
//! ```

use super::error::{ChildError, ChildResult, sys};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::path::{Path, PathBuf};

pub(super) fn mount_proc(target: &Path) -> ChildResult<()> {
    mount(
        Some("proc"),
        target,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(sys(format!(
        "mounting a fresh /proc on {}",
        target.display()
    )))
}

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

pub(super) fn setup(root: &Path, etc_files: &[(PathBuf, String)]) -> ChildResult<()> {
    // pivot_root needs the new root to be a mount point.
    bind(root, root, MsFlags::MS_REC)?;
    let proc_dir = root.join("proc");
    ensure_dir(&proc_dir)?;
    mount_proc(&proc_dir)?;
    let sysfs = root.join("sys");
    ensure_dir(&sysfs)?;
    // sysfs can only be mounted by the owner of the network namespace; without it the container
    // simply has an empty /sys.
    if let Err(e) = mount(
        Some("sysfs"),
        &sysfs,
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        tracing::debug!(%e, "no sysfs in the container");
    }
    let dev = root.join("dev");
    ensure_dir(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(sys("mount tmpfs on /dev"))?;
    // Device nodes by bind mount: mknod is not allowed in a user namespace.
    for n in ["null", "zero", "full", "random", "urandom", "tty"] {
        let src = Path::new("/dev").join(n);
        if !src.exists() {
            continue;
        }
        let dst = dev.join(n);
        ensure_file(&dst)?;
        bind(&src, &dst, MsFlags::empty())?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, dev.join(name));
    }
    let shm = dev.join("shm");
    ensure_dir(&shm)?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(sys("mount tmpfs on /dev/shm"))?;
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
    Ok(())
}
