//! The contract between the `dnsname` CNI plugin (short-lived, no DNS library) and the network's
//! DNS server `tether-dns` (long-running, hickory): files under one directory per network. The
//! plugin is their one writer (temp file + rename, under the network's lock); the server only
//! reads them, so DEL works, and the records stay right, while the server is down.
//!
//! ```text
//!  $TETHER_DNS_DIR (default /run/tether/dns), or the plugin's `dataDir` key
//!  ├── <network>.lock       flock: every plugin command on <network> holds it
//!  └── <network>/
//!      ├── records.json     plugin: one entry per attachment (names, addresses)
//!      ├── server.json      plugin: what the server listens on, its domain, its resolv.conf
//!      ├── server.pid       plugin: the pid of the server it started (checked against
//!      │                    /proc/<pid>/cmdline, never found by name)
//!      ├── server.log       server: its stderr (stdout is the readiness pipe, then /dev/null)
//!      └── control.sock     server: `reload` / `ping`, one line each, answered `ok <n>`
//! ```
//!
//! Why a control socket besides SIGHUP: a signal is not acknowledged, so a plugin that sent one
//! could return before the server re-read the records, and the name would not resolve yet when
//! ADD returns. `reload` on the socket answers only after the new records are in use.

mod names;
mod records;

pub use names::{valid_domain, valid_label};
pub use records::{Entry, Records, ServerConfig};

use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable that moves the state directory.
pub const DIR_ENV: &str = "TETHER_DNS_DIR";
/// The state directory's default.
pub const DEFAULT_DIR: &str = "/run/tether/dns";
/// The server's binary name, looked up in `CNI_PATH` (then beside the plugin).
pub const SERVER_BIN: &str = "tether-dns";
/// What the server prints on its stdout once its sockets are bound.
pub const READY: &str = "ready";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid dns state file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// The I/O error underneath, if any (for the plugin's error codes).
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Parse { .. } => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_takes_only_our_files_and_keeps_a_directory_that_holds_others() {
        let t = tempfile::tempdir().unwrap();
        let d = NetDir::new(t.path(), "n");
        std::fs::create_dir_all(d.path()).unwrap();
        write_json(&d.records(), &Records::default()).unwrap();
        std::fs::write(d.path().join("precious"), "x").unwrap();
        d.remove().unwrap();
        assert!(d.path().join("precious").exists() && !d.records().exists());
        std::fs::remove_file(d.path().join("precious")).unwrap();
        std::fs::write(d.log(), "log").unwrap();
        d.remove().unwrap();
        assert!(!d.path().exists());
        d.remove().unwrap();
    }
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state directory: `$TETHER_DNS_DIR` when set and not empty, else [`DEFAULT_DIR`].
pub fn default_dir() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// One network's directory and the files in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDir {
    pub root: PathBuf,
    pub network: String,
}

impl NetDir {
    /// `network` must already be a valid CNI network name (the protocol layer checks it: no
    /// `/`, not starting with `.`), so it is one path component.
    pub fn new(root: impl Into<PathBuf>, network: &str) -> NetDir {
        NetDir {
            root: root.into(),
            network: network.to_string(),
        }
    }
    pub fn path(&self) -> PathBuf {
        self.root.join(&self.network)
    }
    pub fn lock_name(&self) -> String {
        format!("{}.lock", self.network)
    }
    pub fn records(&self) -> PathBuf {
        self.path().join("records.json")
    }
    pub fn server_config(&self) -> PathBuf {
        self.path().join("server.json")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.path().join("server.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.path().join("server.log")
    }
    pub fn control(&self) -> PathBuf {
        self.path().join("control.sock")
    }

    /// Every file the plugin or the server may have made in the directory (the temp files of
    /// [`write_atomic`] included): what removing the network's state removes, and nothing else.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v = vec![
            self.records(),
            self.server_config(),
            self.pid_file(),
            self.log(),
            self.control(),
        ];
        for f in [self.records(), self.server_config(), self.pid_file()] {
            v.push(f.with_extension("tmp"));
        }
        v
    }

    /// Removes [`NetDir::files`], then the directory if that left it empty: a directory that
    /// holds anything else (it is not ours after all, say a `dataDir` pointing at `/`) keeps it.
    pub fn remove(&self) -> Result<()> {
        for f in self.files() {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&f)(e)),
            }
        }
        let dir = self.path();
        match std::fs::remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // Someone else's files are in it: it stays, with them.
            Err(e) if e.raw_os_error() == Some(39) => Ok(()),
            Err(e) => Err(io_at(&dir)(e)),
        }
    }
}

/// Writes `bytes` to `path` atomically: a reader sees the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io_at(&tmp))?;
    f.write_all(bytes).map_err(io_at(&tmp))?;
    f.sync_data().map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_at(path))
}

/// Reads a JSON state file; `None` when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| Error::Parse {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Writes a JSON state file atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("state serialises");
    write_atomic(path, &bytes)
}
