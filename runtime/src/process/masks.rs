//! Docker's masked and read-only paths, and `--read-only`, applied in the container's root once it
//! is in place (after pivot_root, or at once without `--rootfs`): the container's own mount
//! namespace is private, so none of this reaches the host.
//!
//! ```text
//! masked file   /dev/null bound over it          (/proc/kcore reads as empty)
//! masked dir    an empty read-only tmpfs         (/proc/acpi, /sys/firmware ...)
//! read-only     bound onto itself, remounted ro  (/proc/sys: no host-wide sysctl)
//! --read-only   the root mount remounted ro (its own mounts: /dev, /proc, /sys stay as they are)
//! ```
//! A path the kernel does not have is skipped, as runc does.

use super::error::{ChildResult, sys};
use nix::mount::{MsFlags, mount};
use std::path::Path;

/// moby's `oci.DefaultSpec` MaskedPaths.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// moby's ReadonlyPaths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub(super) fn apply(
    masked: &[String],
    readonly: &[String],
    read_only_root: bool,
) -> ChildResult<()> {
    for p in masked {
        mask(Path::new(p))?;
    }
    for p in readonly {
        make_readonly(Path::new(p))?;
    }
    if read_only_root {
        remount_readonly(Path::new("/")).map_err(sys("remounting / read-only (--read-only)"))?;
    }
    Ok(())
}

fn mask(p: &Path) -> ChildResult<()> {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return Ok(());
    };
    let r = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    match r {
        // Gone meanwhile (a /proc entry of an exited process, say).
        Err(nix::errno::Errno::ENOENT) => Ok(()),
        r => r.map_err(sys(format!("masking {}", p.display()))),
    }
}

fn make_readonly(p: &Path) -> ChildResult<()> {
    match mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        r => r.map_err(sys(format!("bind mount {} on itself", p.display())))?,
    }
    remount_readonly(p).map_err(sys(format!("remounting {} read-only", p.display())))
}

/// `MS_REMOUNT | MS_BIND | MS_RDONLY`, keeping the mount's other flags: in a user namespace the
/// kernel refuses to clear nosuid, nodev or noexec on a mount it locked.
pub(super) fn remount_readonly(p: &Path) -> nix::Result<()> {
    let st = nix::sys::statvfs::statvfs(p)?;
    use nix::sys::statvfs::FsFlags;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    for (f, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if st.flags().contains(f) {
            flags |= m;
        }
    }
    mount(None::<&str>, p, None::<&str>, flags, None::<&str>)
}
