//! The host terminal in raw mode while tether is attached with `-i -t`: every key, ^C included,
//! goes to the container's pty as a byte, and the container's line discipline does the rest.
//! Restored when the guard drops: on the normal exit, when the container is killed, when tether
//! is told to stop (SIGTERM/SIGHUP end the copy loop, which returns and drops it), and on a panic
//! (the workspace unwinds). Only SIGKILL leaves it raw: `reset` (or `stty sane`) repairs that.

use crate::error::{Context, Result};
use nix::sys::termios::{self, SetArg, Termios};

pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts tether's stdin (a terminal) in raw mode.
    pub fn enter() -> Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ctx("failed to read the terminal's mode")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)
            .ctx("failed to put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // TCSADRAIN: what the container printed last reaches the screen in raw mode first.
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &self.saved);
    }
}
