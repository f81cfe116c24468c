//! Signals: what a foreground `tether run` (and `tether exec`) catches to forward to the
//! container, what the detached supervisor ignores, and the clean slate a container process
//! starts from.

use crate::tty::FORWARDED;
use nix::sys::signal::{SigHandler, SigSet, Signal, signal};
use std::sync::atomic::{AtomicU64, Ordering};

/// Caught signals not yet forwarded, one bit per signal number.
static PENDING: AtomicU64 = AtomicU64::new(0);

extern "C" fn record_signal(sig: libc::c_int) {
    PENDING.fetch_or(1 << sig, Ordering::SeqCst);
}

/// Catches the signals a foreground `tether run` forwards. No SA_RESTART, so `waitpid` returns
/// EINTR and the wait loop can forward them.
pub fn install_forwarding() {
    use nix::sys::signal::{SaFlags, SigAction, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(record_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in FORWARDED {
        // SAFETY: the handler only touches an atomic.
        let _ = unsafe { sigaction(s, &act) };
    }
}

/// Ignores the forwarded signals (the detached supervisor must outlive a stray SIGHUP).
pub fn ignore_forwarded() {
    for s in FORWARDED {
        // SAFETY: installing SIG_IGN is always sound.
        let _ = unsafe { signal(s, SigHandler::SigIgn) };
    }
}

/// The signals caught since the last call.
pub(super) fn take_pending() -> Vec<Signal> {
    let bits = PENDING.swap(0, Ordering::SeqCst);
    (1..64)
        .filter(|n| bits & (1 << n) != 0)
        .filter_map(|n| Signal::try_from(n).ok())
        .collect()
}

/// Default dispositions and an empty mask: exec keeps ignored signals ignored, and Rust ignores
/// SIGPIPE at startup.
pub(super) fn reset() {
    for n in 1..32 {
        if let Ok(s) = Signal::try_from(n)
            && s != Signal::SIGKILL
            && s != Signal::SIGSTOP
        {
            // SAFETY: installing SIG_DFL is always sound.
            let _ = unsafe { signal(s, SigHandler::SigDfl) };
        }
    }
    let _ = SigSet::empty().thread_set_mask();
}

/// Marks every fd above stderr close-on-exec, so the command inherits only stdio.
pub(super) fn close_inherited_fds() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags (nix has no close_range).
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_signals_are_taken_once() {
        record_signal(Signal::SIGUSR1 as libc::c_int);
        record_signal(Signal::SIGTERM as libc::c_int);
        let mut got = take_pending();
        got.sort_by_key(|s| *s as i32);
        assert_eq!(got, [Signal::SIGUSR1, Signal::SIGTERM]);
        assert_eq!(take_pending(), []);
    }
}
