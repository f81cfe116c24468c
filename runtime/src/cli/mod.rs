//! The `tether` command line, in three parts:
//!
//! ```text
//! args.rs      the clap types (tether run's are the runtime's own: run/opts.rs)
//! dispatch.rs  one arm per command: what to call
//! print.rs     tables and JSON on stdout
//! ```
//!
//! No runtime logic lives here: the commands' work is in `run/`, `container.rs`, `gc.rs`,
//! `cnitool.rs` and `network/`.

mod args;
mod dispatch;
mod print;

pub use args::{Cli, Command, ExecArgs, Global, NetworkCmd, PsArgs};

use std::io::Write;

/// Runs a parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    let is_run = matches!(cli.command, Command::Run(_) | Command::Exec(_));
    match dispatch::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tether: {e}");
            // Docker's convention: 125 when the runtime itself failed to run the container.
            if is_run { 125 } else { 1 }
        }
    }
}
