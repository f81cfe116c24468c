//! The undo stack: every ADD step that creates something pushes how to remove it; if ADD does not
//! reach the end (an error, or a panic unwinding), the steps run in reverse order.

/// One rollback step: what it undoes (for the log) and how.
type Step<'a> = (String, Box<dyn FnOnce() -> Result<(), String> + 'a>);

/// A pending rollback. Dropping it without [`Undo::commit`] runs every step, newest first;
/// failures are logged (the ADD error is what the runtime needs to see).
#[derive(Default)]
pub struct Undo<'a> {
    steps: Vec<Step<'a>>,
}

impl<'a> Undo<'a> {
    pub fn new() -> Undo<'a> {
        Undo::default()
    }

    /// Registers the removal of something just created.
    pub fn push(
        &mut self,
        what: impl Into<String>,
        step: impl FnOnce() -> Result<(), String> + 'a,
    ) {
        self.steps.push((what.into(), Box::new(step)));
    }

    /// ADD succeeded: keep everything.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    fn unwind(&mut self) {
        while let Some((what, step)) = self.steps.pop() {
            match step() {
                Ok(()) => tracing::debug!(%what, "rolled back"),
                Err(e) => tracing::warn!(%what, error = %e, "rollback step failed"),
            }
        }
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        self.unwind();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn runs_in_reverse_unless_committed() {
        let log = RefCell::new(Vec::new());
        {
            let mut u = Undo::new();
            u.push("a", || {
                log.borrow_mut().push("a");
                Ok(())
            });
            u.push("b", || {
                log.borrow_mut().push("b");
                Err("boom".into())
            });
            u.push("c", || {
                log.borrow_mut().push("c");
                Ok(())
            });
        }
        assert_eq!(*log.borrow(), ["c", "b", "a"]);
        log.borrow_mut().clear();
        let mut u = Undo::new();
        u.push("a", || {
            log.borrow_mut().push("a");
            Ok(())
        });
        u.commit();
        assert!(log.borrow().is_empty());
    }

    #[test]
    fn runs_on_panic() {
        let log = RefCell::new(Vec::new());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut u = Undo::new();
            u.push("a", || {
                log.borrow_mut().push("a");
                Ok(())
            });
            panic!("mid-ADD");
        }));
        assert!(r.is_err());
        assert_eq!(*log.borrow(), ["a"]);
    }
}
