//! Fault injection for the tests: with `TETHER_TEST_KILL_AT=<step>`, `tether` SIGKILLs itself
//! when it reaches that step, as a kill at an unlucky moment would. The steps of `tether run` are
//! named where they are called (`run/create.rs`, `netns.rs`, `atomic.rs`).
//!
//! For a deterministic interleaving of two commands: with `TETHER_TEST_PAUSE_AT=<step>` and
//! `TETHER_TEST_PAUSE_FILE=<path>`, `tether` creates the file when it reaches the step and
//! waits until the test removes it (60 s at most), while the test runs the other command.

/// SIGKILLs this process if `TETHER_TEST_KILL_AT` names `step`.
pub fn kill_point(step: &str) {
    if std::env::var_os("TETHER_TEST_KILL_AT").is_some_and(|v| v == step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Waits at `step` while `TETHER_TEST_PAUSE_FILE` exists, if `TETHER_TEST_PAUSE_AT` names it.
pub fn pause_point(step: &str) {
    if std::env::var_os("TETHER_TEST_PAUSE_AT").is_none_or(|v| v != step) {
        return;
    }
    let Some(file) = std::env::var_os("TETHER_TEST_PAUSE_FILE") else {
        return;
    };
    if std::fs::write(&file, step).is_err() {
        return;
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::path::Path::new(&file).exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
