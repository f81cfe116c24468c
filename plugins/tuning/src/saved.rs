//! The original values, saved before ADD changes anything and put back by DEL.
//!
//! One JSON file per attachment, `<dataDir>/<containerID>_<ifname>.json`: the reference's name and
//! field names (`mac`, `mtu`, `promisc`, `allmulti`, `txQLen`), so a backup written by the
//! reference plugin is restored by ours and the other way round. `sysctl` is ours: the reference
//! does not restore sysctls, which matters when the namespace outlives the attachment.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 0 means "not saved" in the reference's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allmulti: Option<bool>,
    #[serde(rename = "txQLen", default, skip_serializing_if = "Option::is_none")]
    pub tx_qlen: Option<u32>,
    /// `/proc/sys/net/...` path to its value before ADD.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, String>,
}

impl Saved {
    /// Keeps what `self` already has (it was saved first, so it is the original) and takes the
    /// rest from `newer`. A repeated ADD therefore never overwrites the true originals with values
    /// the first ADD set.
    pub fn merge_missing(&mut self, newer: Saved) {
        self.mac = self.mac.take().or(newer.mac);
        self.mtu = self.mtu.filter(|m| *m != 0).or(newer.mtu);
        self.promisc = self.promisc.or(newer.promisc);
        self.allmulti = self.allmulti.or(newer.allmulti);
        self.tx_qlen = self.tx_qlen.or(newer.tx_qlen);
        for (k, v) in newer.sysctl {
            self.sysctl.entry(k).or_insert(v);
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Saved::default()
    }
}

pub fn file(data_dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    // Both parts were validated by the skel (container ids and interface names cannot hold '/').
    data_dir.join(format!("{container_id}_{ifname}.json"))
}

/// The saved values, or `None` when there is no file. An unreadable (corrupt) file is reported.
pub fn load(path: &Path) -> Result<Option<Saved>, Error> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Config(format!("corrupt tuning backup {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            what: format!("failed to read {}", path.display()),
            source: e,
        }),
    }
}

/// Writes the file atomically (temp file + rename), so a crash never leaves half a backup.
pub fn store(path: &Path, saved: &Saved) -> Result<(), Error> {
    let io = |what: String| move |source| Error::Io { what, source };
    let dir = path.parent().expect("backup file has a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("failed to create {}", dir.display())))?;
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(saved).expect("backup serializes");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(io(format!("failed to write {}", path.display())))
}

pub fn remove(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            what: format!("failed to remove {}", path.display()),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_reference_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir.path().join("sub"), "cid", "eth0");
        assert_eq!(load(&p).unwrap(), None);
        let mut s = Saved {
            mtu: Some(1500),
            promisc: Some(false),
            ..Default::default()
        };
        s.sysctl
            .insert("/proc/sys/net/core/somaxconn".into(), "4096".into());
        store(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), Some(s));
        // What the reference writes.
        std::fs::write(
            &p,
            r#"{"mac":"aa:bb:cc:dd:ee:ff","promisc":true,"mtu":9000,"allmulti":false}"#,
        )
        .unwrap();
        let r = load(&p).unwrap().unwrap();
        assert_eq!(r.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
        assert_eq!(r.mtu, Some(9000));
        remove(&p).unwrap();
        remove(&p).unwrap();
    }

    #[test]
    fn merge_keeps_originals() {
        let mut first = Saved {
            mtu: Some(1500),
            ..Default::default()
        };
        first.sysctl.insert("a".into(), "1".into());
        let mut second = Saved {
            mtu: Some(1400),
            tx_qlen: Some(1000),
            ..Default::default()
        };
        second.sysctl.insert("a".into(), "2".into());
        second.sysctl.insert("b".into(), "3".into());
        first.merge_missing(second);
        assert_eq!(first.mtu, Some(1500));
        assert_eq!(first.tx_qlen, Some(1000));
        assert_eq!(first.sysctl["a"], "1");
        assert_eq!(first.sysctl["b"], "3");
    }
}
