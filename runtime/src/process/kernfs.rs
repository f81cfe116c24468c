//! The kernel's filesystems in the container: a fresh /proc for its PID namespace, and /sys with
//! the cgroup filesystem, both read-only unless `--privileged`.
//!
//! ```text
//! /proc             proc, nosuid,nodev,noexec (masks and read-only paths: masks.rs)
//! /sys              a fresh sysfs, ro: it shows the container's own network namespace (runc);
//!                   where the kernel refuses one (--net=host with --userns), the host's /sys
//!                   bound recursively and made read-only
//! /sys/fs/cgroup    private cgroupns on a cgroup2 host: a fresh cgroup2 mount, ro, rooted at the
//!                   container's cgroup; else the host's cgroup mounts bound, recursively
//!                   ro,nosuid,nodev,noexec
//! ```
//! Without `--rootfs` the host's /sys is covered the same way (a private mount namespace: the
//! host's own mounts do not change); `--privileged` then keeps it as it is.

use super::error::{ChildError, ChildResult, sys};
use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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

#[derive(Debug, Clone, Copy)]
pub(super) struct SysOpts {
    pub privileged: bool,
    pub cgroupns_private: bool,
    /// The target is the host's own /sys (no `--rootfs`).
    pub over_host: bool,
}

/// Mounts /sys (and its cgroup filesystem) on `target`.
pub(super) fn mount_sys(target: &Path, o: SysOpts) -> ChildResult<()> {
    if o.privileged && o.over_host {
        return Ok(());
    }
    // Held before /sys is covered: the host's cgroup mounts, to bind under the new one.
    let host_cgroup = open(
        "/sys/fs/cgroup",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok();
    let ro = if o.privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    // sysfs can only be mounted by the owner of the network namespace.
    if let Err(e) = mount(
        Some("sysfs"),
        target,
        Some("sysfs"),
        ro | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        tracing::debug!(%e, "no fresh sysfs: the host's, read-only");
        if !o.over_host {
            bind_tree(Path::new("/sys"), target)?;
        }
        if !o.privileged {
            readonly_tree(target)?;
        }
        return Ok(());
    }
    let cg = target.join("fs/cgroup");
    let Some(host_cgroup) = host_cgroup else {
        return Ok(());
    };
    let cgroup2 = nix::sys::statfs::fstatfs(&host_cgroup)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    if o.cgroupns_private && cgroup2 {
        return mount(
            Some("cgroup2"),
            &cg,
            Some("cgroup2"),
            ro | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(sys("mounting cgroup2 on /sys/fs/cgroup"));
    }
    bind_tree(&fd_path(&host_cgroup), &cg)?;
    if !o.privileged {
        readonly_tree(&cg)?;
    }
    Ok(())
}

/// The magic link of an fd of this process: a mount source that was covered since it was opened.
pub(super) fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn bind_tree(src: &Path, dst: &Path) -> ChildResult<()> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys(format!(
        "bind mount {} on {}",
        src.display(),
        dst.display()
    )))
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Makes `p` and every mount below it read-only, nosuid, nodev and noexec in one call
/// (mount_setattr, Linux 5.12), as runc mounts sysfs and the cgroup filesystems whatever the
/// host's own mounts have (a v1 host often mounts its controllers without nosuid,nodev,noexec);
/// the top mount only, read-only (remount, masks.rs), on an older kernel.
fn readonly_tree(p: &Path) -> ChildResult<()> {
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| ChildError::Other(format!("{} contains a NUL byte", p.display())))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a NUL-terminated path and a mount_attr of the size we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = nix::errno::Errno::last();
    if e != nix::errno::Errno::ENOSYS {
        return Err(sys(format!("making {} read-only", p.display()))(e));
    }
    super::masks::remount_readonly(p).map_err(sys(format!("remounting {} read-only", p.display())))
}
