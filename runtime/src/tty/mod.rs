//! Interactive terminals: `tether run -t` / `tether exec -t` give the container a pseudo-terminal
//! of its own, and `-i` keeps its stdin open. Docker's flags, Docker's behaviour.
//!
//! ```text
//! host terminal (tether's stdin/stdout)        container process
//!   raw mode while attached (-i -t)              setsid, TIOCSCTTY: the pty slave is its
//!          │  bytes (^C is a byte)               controlling terminal and its stdin/out/err;
//!          ▼                                     the slave's line discipline turns ^C into
//!   tether: poll(stdin, master, signalfd) ──►   SIGINT for its foreground process group
//!          ▲  master output ───► stdout (or the container log with -d)
//!   SIGWINCH: TIOCGWINSZ(stdin) → TIOCSWINSZ(master): the kernel signals the container
//!   SIGINT/TERM/HUP/QUIT/USR1/USR2: forwarded to the process; SIGCHLD: reap, drain, exit code
//! ```
//!
//! ```text
//! pty.rs    open the pair (host's /dev/ptmx), window sizes, the child's side (controlling tty,
//!           /dev/console: cloned before pivot_root, mounted after)
//! raw.rs    RawMode: the host terminal in raw mode, restored on drop (and by the loop on every
//!           signal that ends it)
//! copy.rs   attach(): the copy loop until the process exits; its exit code
//! ```
//!
//! Without `-i` the container's stdin is `/dev/null` (Docker attaches no stdin); with `-i` and no
//! `-t` it is tether's own stdin, inherited. Leaf module: `process` and `run` use it, it uses
//! neither.

mod copy;
mod pty;
mod raw;

pub use copy::{Attach, FORWARDED, attach};
pub use pty::{Pty, attach_console, clone_console, make_controlling, stdin_to_null};
pub use raw::RawMode;

/// Docker's check before anything is created: `-i -t` needs a terminal on stdin.
pub fn check_input(interactive: bool, tty: bool) -> Result<(), String> {
    if interactive && tty && !nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
        return Err("the input device is not a TTY".into());
    }
    Ok(())
}
