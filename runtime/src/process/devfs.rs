//! The container's /dev: a small tmpfs with only the devices a process expects, as runc makes it.
//!
//! ```text
//! /dev               tmpfs, mode 755, nosuid
//!   null zero full random urandom tty     mknod (host root), or bound from the host's nodes
//!   <--device>                            the same (the device cgroup allows exactly these)
//!   console                               the pty's slave, when one is allocated (-t)
//!   fd stdin stdout stderr core ptmx      symlinks (ptmx -> pts/ptmx)
//!   pts/             a new devpts instance: the container's own ptys
//!   shm/             tmpfs 1777
//!   mqueue/          the IPC namespace's POSIX message queues
//! ```
//! mknod is refused in a user namespace, hence the binds there. Host sources are opened before
//! the tmpfs covers them (without `--rootfs` it covers the host's /dev in the private mount
//! namespace) and bound from their fds. `--privileged`: every host device, copied the same way
//! (without `--rootfs`: the host's /dev as it is).

use super::error::{ChildError, ChildResult, sys};
use super::kernfs::fd_path;
use crate::cgroups::devices::{Device, STANDARD_NODES};
use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, makedev, mknod, umask};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy)]
pub(super) struct DevOpts<'a> {
    pub userns: bool,
    pub privileged: bool,
    pub devices: &'a [Device],
    /// The pty slave to bind on /dev/console (the terminal support sets it; None: no console).
    pub console: Option<&'a Path>,
    /// The target is the host's own /dev (no `--rootfs`).
    pub over_host: bool,
}

/// One node to make: its path below /dev, and the host node to bind under a user namespace.
struct Node {
    rel: PathBuf,
    host: PathBuf,
    kind: SFlag,
    major: u32,
    minor: u32,
    /// Permission bits.
    mode: u32,
    src: Option<OwnedFd>,
}

pub(super) fn mount_dev(dev: &Path, o: DevOpts) -> ChildResult<()> {
    if o.privileged && o.over_host {
        return Ok(());
    }
    let mut nodes = if o.privileged {
        host_nodes()
    } else {
        standard_nodes()
    };
    for d in o.devices {
        nodes.push(Node {
            rel: d.container_path.trim_start_matches("/dev/").into(),
            host: d.host_path.clone(),
            kind: if d.kind == 'b' {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFCHR
            },
            major: d.major,
            minor: d.minor,
            mode: 0o666,
            src: None,
        });
    }
    if o.userns {
        for n in &mut nodes {
            // A host without the node: the container has none either (as runc).
            n.src = open(&n.host, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).ok();
        }
    }
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(sys(format!("mount tmpfs on {}", dev.display())))?;
    // Nodes with their own modes, whatever tether's umask.
    let old = umask(Mode::empty());
    let r = populate(dev, &nodes, o);
    umask(old);
    r
}

fn standard_nodes() -> Vec<Node> {
    STANDARD_NODES
        .iter()
        .map(|&(n, major, minor)| Node {
            rel: n.into(),
            host: Path::new("/dev").join(n),
            kind: SFlag::S_IFCHR,
            major,
            minor,
            mode: 0o666,
            src: None,
        })
        .collect()
}

/// `--privileged`: a copy of every device node of the host's /dev (not the host's /dev itself:
/// what the container creates or removes there stays in its own tmpfs), as Docker does.
fn host_nodes() -> Vec<Node> {
    let mut v = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(Path::new("/dev").join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let Ok(m) = e.metadata() else { continue };
            let ft = m.file_type();
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            if ft.is_dir() {
                // Mounted fresh below.
                if !["pts", "shm", "mqueue"].iter().any(|x| r == Path::new(x)) {
                    dirs.push(r);
                }
            } else if (ft.is_char_device() || ft.is_block_device())
                // A symlink into pts/, as without --privileged; the console is the pty's.
                && !(r == Path::new("ptmx") || r == Path::new("console"))
            {
                v.push(Node {
                    host: Path::new("/dev").join(&r),
                    rel: r,
                    kind: if ft.is_block_device() {
                        SFlag::S_IFBLK
                    } else {
                        SFlag::S_IFCHR
                    },
                    major: libc::major(m.rdev()),
                    minor: libc::minor(m.rdev()),
                    mode: m.mode() & 0o7777,
                    src: None,
                });
            }
        }
    }
    v
}

fn populate(dev: &Path, nodes: &[Node], o: DevOpts) -> ChildResult<()> {
    let other = |p: &Path, e: std::io::Error| ChildError::Other(format!("{}: {e}", p.display()));
    for n in nodes {
        let dst = dev.join(&n.rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| other(parent, e))?;
        }
        if o.userns {
            let Some(src) = &n.src else { continue };
            std::fs::File::create(&dst).map_err(|e| other(&dst, e))?;
            mount(
                Some(&fd_path(src)),
                &dst,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(sys(format!(
                "bind mount {} on {}",
                n.host.display(),
                dst.display()
            )))?;
        } else {
            mknod(
                &dst,
                n.kind,
                Mode::from_bits_truncate(n.mode),
                makedev(n.major.into(), n.minor.into()),
            )
            .map_err(sys(format!("mknod {}", dst.display())))?;
        }
    }
    if let Some(pty) = o.console {
        let dst = dev.join("console");
        std::fs::File::create(&dst).map_err(|e| other(&dst, e))?;
        mount(
            Some(pty),
            &dst,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("bind mount the console"))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ] {
        let _ = std::os::unix::fs::symlink(target, dev.join(name));
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(|e| other(&pts, e))?;
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    // gid 5 (tty) as runc; a user namespace that does not map it gets the mounter's group.
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        pts_flags,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .or_else(|_| {
        mount(
            Some("devpts"),
            &pts,
            Some("devpts"),
            pts_flags,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
    })
    .map_err(sys("mount devpts on /dev/pts"))?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(|e| other(&shm, e))?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(sys("mount tmpfs on /dev/shm"))?;
    let mq = dev.join("mqueue");
    std::fs::create_dir(&mq).map_err(|e| other(&mq, e))?;
    mount(
        Some("mqueue"),
        &mq,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(sys("mount mqueue on /dev/mqueue"))?;
    Ok(())
}
