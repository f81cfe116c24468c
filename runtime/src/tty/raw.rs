//! The host terminal in raw mode while tether is attached with `-i -t`: every key, ^C included,
//! goes to the container's pty as a byte, and the container's line discipline does the rest.
//! Restored when the guard drops: on the normal exit, when the container is killed, when tether
//! is told to stop (SIGTERM/SIGHUP are forwarded; the copy loop returns when the container ends
//! and drops the guard), and on a panic (the workspace unwinds). Only SIGKILL leaves it raw:
//! `reset` (or `stty sane`) repairs that.

use crate::error::{Context, Result};
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::{AsFd, OwnedFd};

pub struct RawMode {
    /// A duplicate of the terminal's fd: the mode belongs to the terminal, not to the fd.
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Puts tether's stdin (a terminal) in raw mode.
    pub fn enter() -> Result<RawMode> {
        let fd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .ctx("failed to duplicate stdin")?;
        RawMode::on(fd)
    }

    fn on(fd: OwnedFd) -> Result<RawMode> {
        let saved = termios::tcgetattr(&fd).ctx("failed to read the terminal's mode")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&fd, SetArg::TCSANOW, &raw)
            .ctx("failed to put the terminal in raw mode")?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // TCSADRAIN: what the container printed last reaches the screen in raw mode first.
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::termios::LocalFlags;

    #[test]
    fn the_mode_comes_back_after_a_panic() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let check = pty.slave.try_clone().unwrap();
        let given = pty.slave.try_clone().unwrap();
        let before = termios::tcgetattr(&check).unwrap();
        let cooked = LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG;
        assert!(before.local_flags.contains(cooked));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _raw = RawMode::on(given).unwrap();
            let now = termios::tcgetattr(&check).unwrap();
            assert!(!now.local_flags.intersects(cooked), "raw while attached");
            panic!("a panic while attached");
        }));
        assert!(r.is_err());
        assert_eq!(termios::tcgetattr(&check).unwrap(), before);
        drop(pty);
    }
}
