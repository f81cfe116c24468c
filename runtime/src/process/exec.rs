//! `tether exec`: join every namespace of a running container, fork (so the PID namespace
//! applies), and run a command there through the same become-root-and-exec routine as the init.

use super::child::become_root_and_exec;
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
}

/// Enters every namespace of `pid` that differs from ours, forks, and runs the command; returns
/// its exit code (127 or 126 when it could not be run). This `tether` stays in the container's
/// namespaces for the rest of its (short) life: it only waits. Must be called from a
/// single-threaded process.
pub fn exec_in(pid: i32, spec: &ExecSpec) -> Result<i32> {
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
            let err = become_root_and_exec(spec.userns, &spec.argv, &spec.env, || {
                nix::unistd::chdir(spec.workdir.as_str())
                    .map_err(sys(format!("workdir {}", spec.workdir)))
            });
            let _ = writeln!(std::io::stderr(), "tether exec: {err}");
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(err.exit_code()) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            signals::install_forwarding();
            wait::wait_forwarding(child)
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
