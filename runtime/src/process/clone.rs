//! Cloning the container's init and the handshake with it.
//!
//! ```text
//! tether (parent)                              init (child)
//! socketpair(SEQPACKET, CLOEXEC)
//! [enter the joined netns: NetnsSwitch]
//! clone3(CLONE_INTO_CGROUP) / clone  ───────►  child::main: join v1 cgroup, setup (no userns)
//! [back to tether's netns: guard dropped]       │
//! write id maps, pin netns, CNI ADD             │ blocks reading the socket
//! release(): send "G"                ───────►   become root (userns), setup, exec
//! read: EOF = exec'd (socket is CLOEXEC)  ◄───  or one datagram: the error
//! ```
//!
//! `tether` is single-threaded (no async runtime), so the child is a plain fork-like `clone`: it
//! runs on a copy of the parent's memory and stack, and only ever leaves through `execve` or
//! `_exit`.

use super::child::{self, ChildSpec};
use crate::cgroups::Join;
use crate::error::{Context, Error, Result};
use crate::state::IdMap;
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// A cloned container init waiting for the go-ahead.
pub struct Child {
    pub pid: Pid,
    /// Whether it was born in its cgroup or enters it by itself (else the parent must move it).
    pub in_cgroup: bool,
    sock: std::os::unix::net::UnixStream,
    released: bool,
}

/// The clone flags for a container.
pub fn clone_flags(own_netns: bool, userns: bool) -> CloneFlags {
    let mut f = CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS;
    if own_netns {
        f |= CloneFlags::CLONE_NEWNET;
    }
    if userns {
        f |= CloneFlags::CLONE_NEWUSER;
    }
    f
}

/// From `linux/sched.h` (libc's constant is an `i32` that overflows).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of `clone3(2)`, as of Linux 5.7 (`cgroup` is the last field).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// fork-like `clone(2)`: no new stack, the child continues on a copy of ours. Returns 0 in the child.
/// With `cgroup` (a v2 cgroup directory), `clone3(CLONE_INTO_CGROUP)`: the child is born there.
/// (nix's `clone` always takes a new stack, so this stays a raw syscall.)
fn raw_clone(flags: CloneFlags, cgroup: Option<RawFd>) -> nix::Result<libc::pid_t> {
    // SAFETY: with a null stack pointer (and size) clone and clone3 behave like fork; tether is
    // single-threaded here, so the child inherits no locked mutexes.
    let rc = unsafe {
        match cgroup {
            Some(fd) => {
                let args = CloneArgs {
                    flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
                    exit_signal: libc::SIGCHLD as u64,
                    cgroup: fd as u64,
                    ..Default::default()
                };
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            }
            None => libc::syscall(
                libc::SYS_clone,
                (flags.bits() as libc::c_long) | libc::SIGCHLD as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
            ),
        }
    };
    if rc < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(rc as libc::pid_t)
    }
}

/// Clones the container init. With `join_netns`, the child is born in that network namespace: the
/// parent enters it for the duration of the clone (it is single-threaded) and a guard brings it
/// back on every path. With `cgroup`, the child starts in its cgroup (v2) or moves itself there
/// at once (v1); see [`Child::in_cgroup`].
pub fn spawn(
    spec: &ChildSpec,
    flags: CloneFlags,
    join_netns: Option<&OwnedFd>,
    cgroup: Option<&Join>,
) -> Result<Child> {
    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx("failed to create the sync socket")?;
    let into = match cgroup {
        Some(Join::Dir(d)) => Some(d.as_raw_fd()),
        _ => None,
    };
    let tasks: Vec<RawFd> = match cgroup {
        Some(Join::Tasks(v)) => v.iter().map(AsRawFd::as_raw_fd).collect(),
        _ => Vec::new(),
    };
    let mut in_cgroup = cgroup.is_some();
    let cloned = {
        let _switched = join_netns
            .map(crate::netns::NetnsSwitch::enter)
            .transpose()?;
        let mut cloned = raw_clone(flags, into);
        if into.is_some()
            && matches!(
                cloned,
                Err(nix::errno::Errno::ENOSYS
                    | nix::errno::Errno::E2BIG
                    | nix::errno::Errno::EINVAL)
            )
        {
            // A kernel without clone3 or CLONE_INTO_CGROUP (before 5.7): the parent moves it.
            in_cgroup = false;
            cloned = raw_clone(flags, None);
        }
        if let Ok(0) = cloned {
            drop(parent_end);
            // The child never returns, so the guard never runs in it: its namespace is the
            // one it was born in.
            child::main(spec, &tasks, child_end);
        }
        cloned
    };
    let pid = cloned.map_err(|e| {
        let hint = if e == nix::errno::Errno::EPERM || e == nix::errno::Errno::EINVAL {
            " (tether needs root, or CAP_SYS_ADMIN for namespaces)"
        } else if e == nix::errno::Errno::ENOSPC {
            " (the namespace limit in /proc/sys/user/max_*_namespaces is reached)"
        } else {
            ""
        };
        Error::Sys {
            what: format!("failed to clone the container process{hint}"),
            source: e,
        }
    })?;
    drop(child_end);
    Ok(Child {
        pid: Pid::from_raw(pid),
        in_cgroup,
        sock: std::os::unix::net::UnixStream::from(parent_end),
        released: false,
    })
}

impl Child {
    /// Writes `0 <host_id> <size>` to the child's uid and gid maps.
    pub fn write_id_maps(&self, map: IdMap) -> Result<()> {
        let line = format!("0 {} {}\n", map.host_id, map.size);
        for f in ["uid_map", "gid_map"] {
            let p = format!("/proc/{}/{f}", self.pid);
            std::fs::write(&p, &line).ctx(format!("failed to write {line:?} to {p}"))?;
        }
        Ok(())
    }

    /// Lets the child finish its setup and exec; returns once it has exec'd, or with its error.
    pub fn release(&mut self) -> Result<()> {
        self.released = true;
        self.sock
            .write_all(b"G")
            .ctx("failed to signal the container process (did it die?)")?;
        // The socket is close-on-exec: EOF means exec succeeded; anything else is the error, in
        // one datagram (a short read would truncate it, so the buffer is large).
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match self.sock.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.ctx("failed to read from the container process")?,
            }
        };
        if n == 0 {
            Ok(())
        } else {
            Err(Error::Setup(
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ))
        }
    }

    /// Marks a child that `wait_forwarding` already reaped (its pid may be reused: never signal it).
    pub fn reaped(mut self) {
        self.released = true;
    }

    /// Kills and reaps a child that will not be released.
    pub fn abort(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
        self.released = true;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.released {
            self.abort();
        }
    }
}
