//! The per-test fake host, where binaries are, and the privilege probe.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tempfile::TempDir;

use crate::Netns;

/// One test's private "host": a network namespace plus a temp dir for IPAM and runtime state.
/// Fixed names and subnets are safe inside it. Derefs to the host [`Netns`].
#[derive(Debug)]
pub struct TestHost {
    pub host: Netns,
    pub dir: TempDir,
}

impl TestHost {
    /// Creates the host namespace and temp dir; panics (after [`require_privileges`]) if that
    /// is impossible.
    #[track_caller]
    pub fn new() -> TestHost {
        require_privileges();
        TestHost {
            host: Netns::new().unwrap_or_else(|e| panic!("create host namespace: {e}")),
            dir: tempfile::tempdir().expect("create test temp dir"),
        }
    }

    /// A fresh container namespace (with `lo` up).
    #[track_caller]
    pub fn container(&self) -> Netns {
        Netns::new().unwrap_or_else(|e| panic!("create container namespace: {e}"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `<dir>/ipam`, created on first use: a host-local `dataDir`.
    pub fn ipam_dir(&self) -> PathBuf {
        self.subdir("ipam")
    }

    /// `<dir>/state`, created on first use: runtime state and CNI cache.
    pub fn state_dir(&self) -> PathBuf {
        self.subdir("state")
    }

    fn subdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        p
    }
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl std::ops::Deref for TestHost {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.host
    }
}

/// The cargo profile directory holding the workspace's binaries (`target/debug`), derived from
/// the running test executable (`target/debug/deps/name-hash`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test executable has a parent")
        .to_path_buf();
    if matches!(
        dir.file_name().and_then(|n| n.to_str()),
        Some("deps" | "examples")
    ) {
        dir.pop();
    }
    dir
}

/// One of our plugin binaries; panics if it has not been built.
#[track_caller]
pub fn plugin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "plugin binary {} is missing: build them first: cargo build --workspace --bins",
        p.display()
    );
    p
}

/// A reference plugin from Debian's containernetworking-plugins, if installed.
pub fn reference_plugin(name: &str) -> Option<PathBuf> {
    let p = Path::new("/usr/lib/cni").join(name);
    p.is_file().then_some(p)
}

/// Panics with the reason unless this process can create a network namespace, a bridge and a
/// veth in it. Probed once per process; tests never skip silently.
#[track_caller]
pub fn require_privileges() {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = PROBE.get_or_init(probe) {
        panic!(
            "netns-fixtures: this process cannot build test networks ({why}); \
             run the tests as root or under `unshare -rn`"
        );
    }
}

fn probe() -> Result<(), String> {
    let ns = Netns::new().map_err(|e| format!("new network namespace: {e}"))?;
    let h = tether_netlink::NsHandle::for_netns(ns.as_fd()).map_err(|e| e.to_string())?;
    let br = h
        .create_bridge("probe-br", None, false)
        .map_err(|e| e.to_string())?;
    h.create_veth(
        "probe-a",
        None,
        Some(br.index),
        "probe-b",
        ns.as_fd(),
        None,
        None,
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}
