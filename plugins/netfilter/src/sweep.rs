//! Save, plan, apply, and re-plan from a fresh save when the batch went stale; one family per
//! thread.
//!
//! A plan made from a save is only valid for the ruleset it read. Tether's plugins serialise
//! among themselves with [`crate::lock::netfilter_lock`], but the reference plugins, firewalld,
//! kube-proxy or an admin may change the tables between our save and our restore; the restore
//! then fails as a whole (a `-D` of a rule that moved, a jump already there) and changes nothing,
//! so planning again from a new save is safe.

use crate::{Batch, Error, Family, Netfilter, SavedTables, Table};

/// Plans made from a save are tried this many times in all.
pub const PLAN_ATTEMPTS: usize = 3;

/// What [`sweep`] does when the first save of a family fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSaveError {
    /// Return the error.
    Fail,
    /// For IPv6, plan nothing and return `T::default()`: a table that cannot even be read (IPv6
    /// disabled, no ip6tables) cannot hold rules that were added through it, so a teardown has
    /// nothing to do there. IPv4 still fails.
    SkipV6,
}

/// Why a [`sweep`] failed, so that callers can say which step (their plan's errors pass through).
#[derive(Debug)]
pub enum SweepError<E> {
    /// Reading the tables failed.
    Save(Error),
    /// The plan returned an error.
    Plan(E),
    /// The batch failed on the last attempt.
    Apply(Error),
}

impl<E: std::fmt::Display> std::fmt::Display for SweepError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SweepError::Save(e) => write!(f, "reading the tables: {e}"),
            SweepError::Plan(e) => e.fmt(f),
            SweepError::Apply(e) => write!(f, "applying the rules: {e}"),
        }
    }
}

/// For plans whose own errors are netfilter errors: the error as it was, without the step.
impl From<SweepError<Error>> for Error {
    fn from(e: SweepError<Error>) -> Error {
        match e {
            SweepError::Save(e) | SweepError::Plan(e) | SweepError::Apply(e) => e,
        }
    }
}

/// Saves `tables` of `family` (one exec, see [`Netfilter::save_tables`]), lets `plan` build a
/// batch from them, applies it (nothing runs for an empty batch) and returns the value `plan`
/// returned with it. When the batch fails, starts over from a fresh save, [`PLAN_ATTEMPTS`]
/// times in all.
pub fn sweep<T: Default, E>(
    nf: &Netfilter,
    family: Family,
    tables: &[Table],
    on_save_error: OnSaveError,
    mut plan: impl FnMut(&SavedTables) -> Result<(Batch, T), E>,
) -> Result<T, SweepError<E>> {
    let mut attempt = 1;
    loop {
        let saved = match nf.save_tables(family, tables) {
            Ok(saved) => saved,
            Err(e)
                if attempt == 1 && on_save_error == OnSaveError::SkipV6 && family == Family::V6 =>
            {
                tracing::warn!(error = %e, "IPv6 tables unreadable; nothing of ours can be there");
                return Ok(T::default());
            }
            Err(e) => return Err(SweepError::Save(e)),
        };
        let (batch, value) = plan(&saved).map_err(SweepError::Plan)?;
        match batch.apply(nf) {
            Ok(()) => return Ok(value),
            Err(e) if attempt < PLAN_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "batch went stale, reading the tables again");
                attempt += 1;
            }
            Err(e) => return Err(SweepError::Apply(e)),
        }
    }
}

/// Runs `f` for each family on its own thread and returns the results in the same order: the v4
/// and v6 tools are separate processes working on separate tables, so their latencies need not
/// add up.
pub fn per_family<T: Send>(families: &[Family], f: impl Fn(Family) -> T + Sync) -> Vec<T> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = families
            .iter()
            .map(|&family| s.spawn(move || f(family)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("per-family worker panicked"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn per_family_runs_the_families_at_once_and_keeps_their_order() {
        let started = AtomicUsize::new(0);
        let caller = std::thread::current().id();
        let out = per_family(&[Family::V6, Family::V4], |family| {
            started.fetch_add(1, Ordering::SeqCst);
            // Sees the other family start only if both run at the same time.
            let deadline = Instant::now() + Duration::from_secs(10);
            while started.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let together = started.load(Ordering::SeqCst) == 2;
            (family, together, std::thread::current().id())
        });
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].0, out[1].0), (Family::V6, Family::V4));
        assert!(out[0].1 && out[1].1, "the families ran one after the other");
        assert!(out[0].2 != caller && out[1].2 != caller && out[0].2 != out[1].2);
        assert!(per_family(&[], |f| f).is_empty());
    }

    #[test]
    fn errors_name_their_step() {
        let save: SweepError<String> = SweepError::Save(Error::Check("x".into()));
        assert_eq!(save.to_string(), "reading the tables: x");
        let plan: SweepError<String> = SweepError::Plan("bad plan".into());
        assert_eq!(plan.to_string(), "bad plan");
        let apply: Error = SweepError::Apply(Error::Check("y".into())).into();
        assert!(matches!(apply, Error::Check(m) if m == "y"));
    }
}
