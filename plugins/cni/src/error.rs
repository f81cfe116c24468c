//! CNI errors: the spec's codes, and the error JSON that goes on stdout.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The well-known error codes of the CNI spec (1.1.0), plus 999 for internal failures as the
/// reference skel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    IoFailure = 5,
    DecodingFailure = 6,
    InvalidNetworkConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    LimitedConnectivity = 51,
    Internal = 999,
}

/// A CNI error: what a plugin prints on failure and what a runtime reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}{}", if .details.is_empty() { String::new() } else { format!(": {}", .details) })]
pub struct Error {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl Error {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Error {
        Error {
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Error {
        self.details = details.into();
        self
    }

    /// An internal error (code 999) whose message is the error's display text, so that the cause
    /// chain reaches the user.
    pub fn internal(msg: impl std::fmt::Display) -> Error {
        Error::new(ErrorCode::Internal, msg.to_string())
    }

    pub fn invalid_config(msg: impl Into<String>) -> Error {
        Error::new(ErrorCode::InvalidNetworkConfig, msg)
    }

    pub fn invalid_env(msg: impl Into<String>) -> Error {
        Error::new(ErrorCode::InvalidEnvironment, msg)
    }

    /// Adds context in front of the message, keeping the code.
    pub fn context(mut self, what: impl std::fmt::Display) -> Error {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

/// Turns any displayable error into a CNI error with context, keeping the chain in the message.
pub trait ResultExt<T> {
    fn cni_context(self, code: ErrorCode, what: impl std::fmt::Display) -> Result<T, Error>;
}

impl<T, E: std::fmt::Display> ResultExt<T> for Result<T, E> {
    fn cni_context(self, code: ErrorCode, what: impl std::fmt::Display) -> Result<T, Error> {
        self.map_err(|e| Error::new(code, format!("{what}: {e}")))
    }
}
