//! A finished command that had to succeed: its stdout, or a panic showing what it printed.

use std::process::Output;

/// The stdout of `out`; panics naming `what` with its stdout and stderr if it failed.
#[track_caller]
pub fn success_stdout(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
