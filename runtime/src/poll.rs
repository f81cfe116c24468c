//! Polling for states the kernel offers no notification of (a v1 freezer's progress, a cgroup
//! emptying, a process exiting on a kernel without pidfds). A leaf module: cgroups and process
//! both use it without depending on each other.

use std::time::{Duration, Instant};

/// Polls `cond` for up to `timeout`, first every 100 µs, backing off to every 10 ms; true once
/// `cond` held.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(100);
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_at_once_false_after_the_timeout() {
        assert!(poll_until(Duration::ZERO, || true));
        let t = Instant::now();
        assert!(!poll_until(Duration::from_millis(20), || false));
        assert!(t.elapsed() >= Duration::from_millis(20));
        let mut n = 0;
        assert!(poll_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
    }
}
