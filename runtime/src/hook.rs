//! Fault injection for the tests: with `TETHER_TEST_KILL_AT=<step>`, `tether` SIGKILLs itself
//! when it reaches that step, as a kill at an unlucky moment would. The steps of `tether run` are
//! named where they are called (`run/create.rs`, `netns.rs`, `atomic.rs`).

/// SIGKILLs this process if `TETHER_TEST_KILL_AT` names `step`.
pub fn kill_point(step: &str) {
    if std::env::var_os("TETHER_TEST_KILL_AT").is_some_and(|v| v == step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
