//! Logs never go to stdout (it belongs to the protocol). They go to stderr, or are appended to
//! `TETHER_LOG_FILE` when that is set: podman and other runtimes discard a plugin's stderr, so a
//! file is the only way to see a plugin's logs under them. Level from `TETHER_LOG`, else
//! `RUST_LOG`, else warnings only.
//!
//! Plugins start in about a millisecond and run once per command, so the common case (no variable
//! set) builds no `EnvFilter` (directive parsing) and opens no file: a plain level filter does.

use std::ffi::OsString;
use std::sync::Arc;
use tracing::Dispatch;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

pub const LOG_FILE_VAR: &str = "TETHER_LOG_FILE";

pub fn init() {
    let _ = tracing::dispatcher::set_global_default(dispatch(|k| std::env::var_os(k)));
}

/// The subscriber `init` installs, from the variables `var` returns (the environment, or a test's).
pub fn dispatch(var: impl Fn(&str) -> Option<OsString>) -> Dispatch {
    let set = |k: &str| var(k).filter(|v| !v.is_empty());
    let filter = set("TETHER_LOG")
        .or_else(|| set("RUST_LOG"))
        .map(|f| f.to_string_lossy().into_owned());
    let Some(path) = set(LOG_FILE_VAR) else {
        return build(std::io::stderr, filter);
    };
    match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
    {
        // O_APPEND and one write per event (fmt formats into a buffer first) keep lines of
        // plugins running at the same time from interleaving.
        Ok(file) => build(Arc::new(file), filter),
        Err(e) => {
            let d = build(std::io::stderr, filter);
            tracing::dispatcher::with_default(&d, || {
                tracing::warn!(file = %path.to_string_lossy(), error = %e, "cannot open {LOG_FILE_VAR}; logging to stderr");
            });
            d
        }
    }
}

fn build<W>(writer: W, filter: Option<String>) -> Dispatch
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let b = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_target(false);
    match filter {
        Some(f) => Dispatch::new(b.with_env_filter(EnvFilter::new(f)).finish()),
        None => Dispatch::new(b.with_max_level(LevelFilter::WARN).finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, OsString)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn emit(d: &Dispatch) {
        tracing::dispatcher::with_default(d, || {
            tracing::debug!("a debug line");
            tracing::info!("an info line");
            tracing::warn!(code = 7, "a warning");
        });
    }

    #[test]
    fn log_file_is_appended_with_the_requested_level() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("plugins.log");
        std::fs::write(&f, "earlier\n").unwrap();
        let p = f.to_str().unwrap();

        emit(&dispatch(vars(&[(LOG_FILE_VAR, p)])));
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("earlier\n"), "appends: {text}");
        assert!(
            text.contains("a warning") && text.contains("code=7"),
            "{text}"
        );
        assert!(!text.contains("an info line"), "warn by default: {text}");

        emit(&dispatch(vars(&[(LOG_FILE_VAR, p), ("RUST_LOG", "info")])));
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.contains("an info line") && !text.contains("a debug line"));

        // TETHER_LOG wins over RUST_LOG.
        emit(&dispatch(vars(&[
            (LOG_FILE_VAR, p),
            ("TETHER_LOG", "debug"),
            ("RUST_LOG", "error"),
        ])));
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.contains("a debug line"), "{text}");
        assert_eq!(text.matches("a warning").count(), 3, "{text}");
    }
}
