//! The attach loop: one `poll` over a signalfd, the pty master and (with `-i`) tether's stdin,
//! until the container's process exits; then what it printed last is drained and its exit code
//! returned. No busy loop: poll blocks until a byte, a signal or the exit.
//!
//! ```text
//! signalfd   SIGCHLD → waitpid(WNOHANG)      SIGWINCH → window size to the master
//!            SIGINT TERM HUP QUIT USR1 USR2 → kill(process, sig)   (forwarding only)
//! master     readable → output (tether's stdout, or the container log)   EIO: no slave left
//! stdin      readable → pending input → master (when writable: a container that reads
//!            nothing stalls the keyboard, never the output)
//!            EOF/EIO: tether's terminal hung up → close the master: the container's terminal
//!            hangs up too (its shell reads EOF, its foreground group gets SIGHUP)
//! ```
//!
//! The signals are blocked while the loop runs and read from the signalfd instead, so none is
//! lost between two polls; the caller's handlers see only what arrives after the loop.

use super::pty::{host_winsize, set_winsize};
use super::raw::RawMode;
use crate::error::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// The signals a foreground `tether run`/`exec` forwards to the container: the one list, read
/// by this loop's signalfd and by `process::signals` (which catches or ignores them).
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// What to attach to the process `pid`, whose stdio is the slave of `master`.
pub struct Attach<'a> {
    /// Closed by the loop if tether's own terminal hangs up.
    pub master: OwnedFd,
    pub pid: Pid,
    /// `-i`: copy tether's stdin to the pty, with the terminal (if it is one) in raw mode.
    pub stdin: bool,
    /// Foreground: forward the usual signals and follow SIGWINCH. The detached supervisor does
    /// neither (it has no terminal and ignores those signals).
    pub forward: bool,
    /// Where the pty's output goes.
    pub output: &'a mut dyn Write,
}

/// Copies until the process exits; returns its exit code (128+N when killed by signal N).
pub fn attach(a: Attach<'_>) -> Result<i32> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    if a.forward {
        mask.add(Signal::SIGWINCH);
        for s in FORWARDED {
            mask.add(s);
        }
    }
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
        .ctx("sigprocmask")?;
    let r = (|| {
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .ctx("signalfd")?;
        let flags = fcntl(&a.master, FcntlArg::F_GETFL).ctx("fcntl on the pty")?;
        fcntl(
            &a.master,
            FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
        )
        .ctx("fcntl on the pty")?;
        if a.forward
            && let Some(ws) = host_winsize()
        {
            // A resize between the pty's opening and the signal's blocking was lost: copy again.
            set_winsize(a.master.as_fd(), &ws);
        }
        let raw = if a.stdin && nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
            Some(RawMode::enter()?)
        } else {
            None
        };
        let code = copy_until_exit(a.master, a.pid, a.stdin, &mut *a.output, &sfd);
        drop(raw);
        code
    })();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    r
}

fn copy_until_exit(
    master_fd: OwnedFd,
    pid: Pid,
    with_stdin: bool,
    output: &mut dyn Write,
    sfd: &SignalFd,
) -> Result<i32> {
    let stdin = std::io::stdin();
    let mut master_fd = Some(master_fd);
    let mut stdin_open = with_stdin;
    let mut master_open = true;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Output(output);
    // An exit before the signal was blocked sent its SIGCHLD to nobody.
    let mut code = reap(pid)?;
    while code.is_none() {
        let Some(master) = master_fd.as_ref().map(AsFd::as_fd) else {
            // Hung up: only the exit is left to wait for.
            wait_signals(sfd, pid, &mut code)?;
            continue;
        };
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let m = master_open.then(|| {
            let mut ev = PollFlags::POLLIN;
            if !pending.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(master, ev));
            fds.len() - 1
        });
        let i = (stdin_open && pending.is_empty() && master_open).then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx("poll"),
        }
        let ready = |k: Option<usize>| {
            k.and_then(|k| fds[k].revents())
                .unwrap_or(PollFlags::empty())
        };
        let (sig_ev, m_ev, i_ev) = (ready(Some(0)), ready(m), ready(i));
        if !sig_ev.is_empty() {
            take_signals(sfd, pid, Some(master), &mut code)?;
        }
        if m_ev.contains(PollFlags::POLLOUT) {
            match nix::unistd::write(master, &pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                // The slave is gone: nobody will read the rest.
                Err(_) => pending.clear(),
            }
        }
        if m_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            master_open = read_master(master, &mut buf, &mut out);
        }
        if !i_ev.is_empty() {
            match nix::unistd::read(&stdin, &mut buf) {
                Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                // In raw mode a terminal reads 0 or EIO only once it hung up.
                _ => {
                    stdin_open = false;
                    master_fd = None;
                    master_open = false;
                }
            }
        }
    }
    let Some(master) = master_fd.as_ref().map(AsFd::as_fd) else {
        return Ok(code.expect("loop ends with the exit code"));
    };
    // What the process printed just before it exited: the master reads EIO once no slave is
    // left (an init's death takes its whole PID namespace); a process it left behind in an
    // exec'd session may keep the slave open, so this is bounded.
    let deadline = Instant::now() + Duration::from_secs(2);
    while master_open && Instant::now() < deadline {
        let mut fds = [PollFd::new(master, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u8)) {
            Ok(0) => break,
            Ok(_) => master_open = read_master(master, &mut buf, &mut out),
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    Ok(code.expect("loop ends with the exit code"))
}

/// Blocks on the signalfd alone (no terminal left): forwards, and reaps.
fn wait_signals(sfd: &SignalFd, pid: Pid, code: &mut Option<i32>) -> Result<()> {
    let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(e).ctx("poll"),
    }
    take_signals(sfd, pid, None, code)
}

/// Acts on the signals caught: SIGCHLD reaps, SIGWINCH resizes the pty (if there still is one),
/// the others are forwarded.
fn take_signals(
    sfd: &SignalFd,
    pid: Pid,
    master: Option<BorrowedFd<'_>>,
    code: &mut Option<i32>,
) -> Result<()> {
    while let Ok(Some(info)) = sfd.read_signal() {
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGCHLD) => *code = reap(pid)?.or(*code),
            Ok(Signal::SIGWINCH) => {
                if let (Some(m), Some(ws)) = (master, host_winsize()) {
                    set_winsize(m, &ws);
                }
            }
            Ok(s) => {
                let _ = kill(pid, s);
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// One read from the master to the output; false once the master has no slave left.
fn read_master(master: BorrowedFd<'_>, buf: &mut [u8], out: &mut Output<'_>) -> bool {
    match nix::unistd::read(master, buf) {
        Ok(0) | Err(Errno::EIO) => false,
        Ok(n) => {
            out.write(&buf[..n]);
            true
        }
        Err(Errno::EAGAIN | Errno::EINTR) => true,
        Err(_) => false,
    }
}

/// The output side: a write error (tether's stdout closed) drops the bytes but keeps the copy
/// going, so the container never blocks on a full pty.
struct Output<'a>(&'a mut dyn Write);

impl Output<'_> {
    fn write(&mut self, b: &[u8]) {
        if self.0.write_all(b).and_then(|()| self.0.flush()).is_err() {
            tracing::debug!("pty output dropped: the output is closed");
        }
    }
}

/// The exit code once `pid` has exited.
fn reap(pid: Pid) -> Result<Option<i32>> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => return Ok(Some(c)),
            Ok(WaitStatus::Signaled(_, s, _)) => return Ok(Some(128 + s as i32)),
            Ok(_) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx(format!("failed to wait for process {pid}")),
        }
    }
}
