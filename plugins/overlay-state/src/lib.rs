//! The contract between the overlay agent (`tether overlay agent`, long-running, talks to etcd)
//! and the `overlay` CNI plugin (short-lived, never talks to etcd): files under one directory,
//! written atomically (temp file + rename) by their one writer, read by anyone.
//!
//! ```text
//!  $TETHER_OVERLAY_DIR (default /run/tether/overlay)
//!  └── <network>/
//!      ├── lease.json        agent: this host's lease (HostLease); gone when the agent revokes it
//!      ├── peers.json        agent: every other host's lease it has programmed ([Peer])
//!      ├── agent.pid         agent: its pid, while it runs
//!      ├── ipam/             plugin: host-local's store (one per host, whichever runtime calls)
//!      └── attachments/      plugin: the delegate config each ADD used, for DEL without the agent
//!                            (agent: reads their "subnet" at start, to keep its containers' subnet)
//!
//!  kernel objects, derived from the VNI alone so that DEL and cleanup find them again:
//!      tvx-<vni>   VXLAN device (agent), address = the host subnet's network address /32
//!      tob-<vni>   bridge the containers attach to (plugin, via bridge), gateway = subnet's first host
//! ```
//!
//! The directory can be moved for tests and odd hosts with `TETHER_OVERLAY_DIR`; agent and plugin
//! read the same variable, so no conflist key is needed for them to find each other.

mod attachments;

pub use attachments::{attachment_file_name, parse_attachment_file_name};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The environment variable that moves the state directory.
pub const DIR_ENV: &str = "TETHER_OVERLAY_DIR";
/// The state directory's default.
pub const DEFAULT_DIR: &str = "/run/tether/overlay";
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = 16_777_215;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid overlay network name {0:?}: use 1-64 of [A-Za-z0-9_.-], not starting with '.' or '-'"
    )]
    BadName(String),
    #[error(
        "invalid overlay attachment {0}: the container id must match [A-Za-z0-9][A-Za-z0-9_.-]* and the ifname be 1-15 bytes without '/'"
    )]
    BadAttachment(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid overlay state file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// This host's lease of a subnet of the overlay, as the agent holds it in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostLease {
    /// The overlay network's name.
    pub network: String,
    /// The whole overlay (e.g. 10.200.0.0/16): containers route it through their gateway.
    pub overlay: IpNetwork,
    /// This host's part of it (e.g. 10.200.3.0/24): the containers' addresses come from here.
    pub subnet: IpNetwork,
    /// The MTU containers get: the underlay interface's MTU minus the encapsulation (50 for VXLAN).
    pub mtu: u32,
    pub vni: u32,
    /// `"vxlan"` or `"host-gw"`.
    pub backend: String,
    /// The underlay address other hosts reach this one at.
    pub public_ip: IpAddr,
    /// The agent that holds the lease.
    pub agent_pid: u32,
}

/// Another host of the overlay, as the agent programmed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    pub public_ip: IpAddr,
    pub subnet: IpNetwork,
    /// The peer's VXLAN device MAC (`"aa:bb:..."`), absent for host-gw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
}

/// The VXLAN device of a VNI.
pub fn vxlan_device(vni: u32) -> String {
    format!("tvx-{vni}")
}

/// The bridge the overlay's containers attach to on a host.
pub fn bridge_name(vni: u32) -> String {
    format!("tob-{vni}")
}

/// Network names become directory names and etcd keys: keep them to a safe alphabet.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_string()))
    }
}

/// The state root: `$TETHER_OVERLAY_DIR`, or `/run/tether/overlay`.
pub fn root() -> PathBuf {
    match std::env::var_os(DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_DIR),
    }
}

/// One network's files under a state root.
#[derive(Debug, Clone)]
pub struct NetworkDir {
    dir: PathBuf,
}

impl NetworkDir {
    /// `root/<network>`, with the name validated.
    pub fn new(root: &Path, network: &str) -> Result<NetworkDir> {
        validate_name(network)?;
        Ok(NetworkDir {
            dir: root.join(network),
        })
    }

    /// The network's directory under [`root`].
    pub fn default_for(network: &str) -> Result<NetworkDir> {
        NetworkDir::new(&root(), network)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
    pub fn lease_file(&self) -> PathBuf {
        self.dir.join("lease.json")
    }
    pub fn peers_file(&self) -> PathBuf {
        self.dir.join("peers.json")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("agent.pid")
    }
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }
    pub fn attachments_dir(&self) -> PathBuf {
        self.dir.join("attachments")
    }

    /// The lease, or `None` when no agent holds one (yet, or any more).
    pub fn read_lease(&self) -> Result<Option<HostLease>> {
        read_json(&self.lease_file())
    }
    pub fn write_lease(&self, lease: &HostLease) -> Result<()> {
        write_json(&self.lease_file(), lease)
    }
    /// Gone is success.
    pub fn remove_lease(&self) -> Result<()> {
        remove(&self.lease_file())
    }

    /// The peers, empty when the agent has written none.
    pub fn read_peers(&self) -> Result<Vec<Peer>> {
        Ok(read_json(&self.peers_file())?.unwrap_or_default())
    }
    pub fn write_peers(&self, peers: &[Peer]) -> Result<()> {
        write_json(&self.peers_file(), &peers)
    }
    /// Gone is success.
    pub fn remove_peers(&self) -> Result<()> {
        remove(&self.peers_file())
    }

    /// The agent's pid, or `None` when no agent wrote one.
    pub fn read_pid(&self) -> Result<Option<u32>> {
        let path = self.pid_file();
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(s.trim().parse().ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io { path, source }),
        }
    }
    /// Written atomically, like the JSON files.
    pub fn write_pid(&self, pid: u32) -> Result<()> {
        write_bytes(&self.pid_file(), format!("{pid}\n").as_bytes())
    }
    /// Gone is success.
    pub fn remove_pid(&self) -> Result<()> {
        remove(&self.pid_file())
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Parse {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Temp file in the same directory, then rename: a reader sees the old file or the new one.
fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("state types serialize");
    write_bytes(path, &bytes)
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().expect("state files live in a directory");
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> HostLease {
        HostLease {
            network: "ov1".into(),
            overlay: "10.200.0.0/16".parse().unwrap(),
            subnet: "10.200.3.0/24".parse().unwrap(),
            mtu: 1450,
            vni: 42,
            backend: "vxlan".into(),
            public_ip: "192.168.50.2".parse().unwrap(),
            agent_pid: 7,
        }
    }

    #[test]
    fn lease_round_trips_and_removal_is_idempotent() {
        let root = tempfile::tempdir().unwrap();
        let d = NetworkDir::new(root.path(), "ov1").unwrap();
        assert_eq!(d.read_lease().unwrap(), None);
        d.write_lease(&lease()).unwrap();
        assert_eq!(d.read_lease().unwrap(), Some(lease()));
        let text = std::fs::read_to_string(d.lease_file()).unwrap();
        assert!(text.contains("\"publicIp\": \"192.168.50.2\""), "{text}");
        d.remove_lease().unwrap();
        d.remove_lease().unwrap();
        assert_eq!(d.read_lease().unwrap(), None);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "no temp files left"
        );
    }

    #[test]
    fn pid_file_round_trips_and_removal_is_idempotent() {
        let root = tempfile::tempdir().unwrap();
        let d = NetworkDir::new(root.path(), "ov1").unwrap();
        assert_eq!(d.read_pid().unwrap(), None);
        d.write_pid(1234).unwrap();
        assert_eq!(d.read_pid().unwrap(), Some(1234));
        d.remove_pid().unwrap();
        d.remove_pid().unwrap();
        assert_eq!(d.read_pid().unwrap(), None);
    }

    #[test]
    fn peers_default_to_empty_and_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let d = NetworkDir::new(root.path(), "ov1").unwrap();
        assert!(d.read_peers().unwrap().is_empty());
        let p = Peer {
            public_ip: "192.168.50.3".parse().unwrap(),
            subnet: "10.200.7.0/24".parse().unwrap(),
            vtep_mac: Some("02:00:00:00:00:01".into()),
        };
        d.write_peers(std::slice::from_ref(&p)).unwrap();
        assert_eq!(d.read_peers().unwrap(), vec![p]);
    }

    #[test]
    fn a_corrupt_lease_file_is_an_error_naming_the_file() {
        let root = tempfile::tempdir().unwrap();
        let d = NetworkDir::new(root.path(), "ov1").unwrap();
        std::fs::create_dir_all(d.path()).unwrap();
        std::fs::write(d.lease_file(), "{not json").unwrap();
        let e = d.read_lease().unwrap_err().to_string();
        assert!(e.contains("lease.json"), "{e}");
    }

    #[test]
    fn names_that_could_escape_the_directory_are_refused() {
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "-x",
            ".hidden",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for good in ["ov1", "my_net.2", "A-b"] {
            validate_name(good).unwrap();
        }
    }

    #[test]
    fn device_names_fit_ifnamsiz_for_every_vni() {
        assert_eq!(vxlan_device(42), "tvx-42");
        assert!(vxlan_device(MAX_VNI).len() <= 15);
        assert!(bridge_name(MAX_VNI).len() <= 15);
    }
}
