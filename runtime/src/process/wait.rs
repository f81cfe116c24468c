//! Waiting for processes: the container's init (forwarding signals meanwhile) and any process by
//! [`ProcRef`], on a pidfd so the wait ends the moment it dies.

use super::signals;
use crate::error::{Context, Result};
use crate::poll::poll_until;
use crate::state::ProcRef;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Waits up to `timeout` for `p` to exit (a zombie has); true once it has.
pub fn wait_exit(p: ProcRef, timeout: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1 (nix has no wrapper).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid, 0) };
    if fd < 0 {
        return match nix::errno::Errno::last() {
            nix::errno::Errno::ESRCH => true,
            // Before Linux 5.3.
            _ => poll_until(timeout, || !p.alive()),
        };
    }
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // Checked after the open: if the pid was reused before, the fd is someone else's and ours is
    // long gone.
    if !p.alive() {
        return true;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up: a wait that ends a fraction of a millisecond early would spin.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as u32;
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return !p.alive(),
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return poll_until(left, || !p.alive()),
        }
    }
}

/// Waits for `pid`, forwarding caught signals to it; returns a shell-style exit code.
pub fn wait_forwarding(pid: Pid) -> Result<i32> {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {
                for s in signals::take_pending() {
                    let _ = kill(pid, s);
                }
            }
            Err(e) => return Err(e).ctx(format!("failed to wait for process {pid}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_exit_returns_when_the_process_dies() {
        let mut c = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let p = ProcRef::of(c.id() as i32).unwrap();
        assert!(!wait_exit(p, Duration::from_millis(10)), "still running");
        let t = Instant::now();
        assert!(wait_exit(p, Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(2));
        c.wait().unwrap();
        assert!(wait_exit(p, Duration::ZERO), "reaped");
    }
}
