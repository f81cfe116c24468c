//! The one error type of the runtime library.

use std::path::Path;

/// Everything that can go wrong in `tether`. Messages say what failed and, for bad input, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the user: an unknown name, a malformed value, a conflict. Nothing was changed.
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// A CNI plugin (or the conflist machinery) failed; the message carries the plugin's own error.
    #[error("{what}: {source}")]
    Cni {
        what: String,
        #[source]
        source: cni::Error,
    },
    #[error("cgroup: {0}")]
    Cgroup(String),
    /// The container's init process reported a failure before exec.
    #[error("container setup failed: {0}")]
    Setup(String),
    /// An error another tether process (the detached supervisor) already formatted.
    #[error("{0}")]
    Reported(String),
    #[error("invalid state file {path}: {source}")]
    State {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub fn cni(what: impl Into<String>, source: cni::Error) -> Error {
        Error::Cni {
            what: what.into(),
            source,
        }
    }

    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_))
    }
}

/// `.ctx("what was being done")` for io, nix and cni results.
pub trait Context<T> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what.to_string(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, nix::errno::Errno> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|source| Error::Sys {
            what: what.to_string(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, cni::Error> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|source| Error::Cni {
            what: what.to_string(),
            source,
        })
    }
}

/// Shorthand for the common "failed to <verb> <path>" context.
pub fn at(verb: &str, p: &Path) -> String {
    format!("failed to {verb} {}", p.display())
}
