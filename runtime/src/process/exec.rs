//! `tether exec`: join every namespace of a running container, fork (so the PID namespace
//! applies), and run a command there through the same become-root-and-exec routine as the init.

use super::child::{become_root_and_exec, container_stdio};
use super::error::sys;
use super::{signals, wait};
use crate::error::{Context, Result};
use nix::sched::CloneFlags;
use std::io::Write;
use std::os::fd::OwnedFd;

/// Namespace kinds in the order `exec` enters them: the user namespace late, so the ones owned by
/// the host's user namespace are still joinable, and the mount namespace last, because entering it
/// changes what `/proc` paths mean.
pub const JOIN_ORDER: [(&str, CloneFlags); 7] = [
    // A private cgroupns (--cgroupns): joined after `tether exec` moved itself into the cgroup.
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

pub struct ExecSpec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub userns: bool,
    /// `-i`: stdin kept open (else /dev/null).
    pub interactive: bool,
    /// `-t`: the process's terminal, opened on the host before any namespace is joined.
    pub tty: Option<crate::tty::Pty>,
    /// The container's confinement, compiled.
    pub confine: crate::confine::Prepared,
}

/// Enters every namespace of `pid` that differs from ours, forks, and runs the command; returns
/// its exit code (127 or 126 when it could not be run). This `tether` stays in the container's
/// namespaces for the rest of its (short) life: it only waits. Must be called from a
/// single-threaded process.
pub fn exec_in(pid: i32, mut spec: ExecSpec) -> Result<i32> {
    // Open everything first: after setns(mnt) `/proc/<pid>` would mean the container's /proc.
    let mut fds = Vec::new();
    for (kind, flag) in JOIN_ORDER {
        let theirs = format!("/proc/{pid}/ns/{kind}");
        let same = std::fs::read_link(&theirs).ok()
            == std::fs::read_link(format!("/proc/self/ns/{kind}")).ok();
        if same {
            continue;
        }
        let f = std::fs::File::open(&theirs).ctx(format!("failed to open {theirs}"))?;
        fds.push((kind, flag, OwnedFd::from(f)));
    }
    for (kind, flag, fd) in &fds {
        nix::sched::setns(fd, *flag)
            .ctx(format!("failed to join the container's {kind} namespace"))?;
    }
    // SAFETY: single-threaded; the child only execs or exits.
    match unsafe { nix::unistd::fork() }.ctx("fork")? {
        nix::unistd::ForkResult::Child => {
            signals::reset();
            let slave = spec.tty.as_ref().and_then(crate::tty::Pty::slave_fd);
            if let Err(err) = container_stdio(slave, None, spec.interactive) {
                let _ = writeln!(std::io::stderr(), "tether exec: {err}");
                // SAFETY: as below.
                unsafe { libc::_exit(err.exit_code()) }
            }
            let err =
                become_root_and_exec(spec.userns, &spec.argv, &spec.env, &spec.confine, || {
                    nix::unistd::chdir(spec.workdir.as_str())
                        .map_err(sys(format!("workdir {}", spec.workdir)))
                });
            let _ = writeln!(std::io::stderr(), "tether exec: {err}");
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(err.exit_code()) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            signals::install_forwarding();
            match spec.tty.take() {
                Some(mut pty) => {
                    // Only the command holds the slave now: the master reads EIO once it is gone.
                    pty.close_slave();
                    crate::tty::attach(crate::tty::Attach {
                        master: pty.master,
                        pid: child,
                        stdin: spec.interactive,
                        forward: true,
                        output: &mut std::io::stdout(),
                    })
                }
                None => wait::wait_forwarding(child),
            }
        }
    }
}

/// The namespace identities of a process (`net:[4026531840]`), for `inspect`.
pub fn namespaces_of(pid: i32) -> std::collections::BTreeMap<String, String> {
    ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"]
        .iter()
        .filter_map(|k| {
            std::fs::read_link(format!("/proc/{pid}/ns/{k}"))
                .ok()
                .map(|l| (k.to_string(), l.display().to_string()))
        })
        .collect()
}
