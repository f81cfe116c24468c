//! The overlay plugin's per-attachment records under `<network>/attachments/`: what each ADD
//! delegated, so that DEL, CHECK and GC work without the agent or its lease.
//!
//! ```text
//!  <network>/attachments/
//!  ├── <container id>@<ifname>.json     one per attachment (plugin: written by ADD, removed by DEL)
//!  ├── .<...>.tmp                       a write in progress (temp file + rename), never listed
//!  └── .masquerade                      the plugin's stamp: masquerading ensured (never listed)
//! ```
//!
//! A container id never contains `@` (CNI allows `[A-Za-z0-9_.-]`), so the first `@` splits a
//! name back into its two parts unambiguously, and an ifname (no `/`, at most 15 bytes) cannot
//! leave the directory. Names that do not parse back are not ours and are never listed.
//! Records are not fsynced: the directory lives under `/run` (a tmpfs), so a record lives
//! exactly as long as the boot, as the containers it describes; the rename keeps it whole.

use std::io::Write;
use std::path::PathBuf;

use crate::{Error, NetworkDir, Result, read_json, remove};

const SUFFIX: &str = ".json";

fn valid_container_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty() && s.len() <= 15 && !s.contains(['/', '\0'])
}

/// `<cid>@<ifname>.json`, or an error naming what is wrong.
pub fn attachment_file_name(container_id: &str, ifname: &str) -> Result<String> {
    let name = format!("{container_id}@{ifname}{SUFFIX}");
    if !valid_container_id(container_id) || !valid_ifname(ifname) || name.len() > 255 {
        return Err(Error::BadAttachment(format!("{container_id:?}/{ifname:?}")));
    }
    Ok(name)
}

/// The `(container id, ifname)` of a record's file name; `None` for anything else.
pub fn parse_attachment_file_name(name: &str) -> Option<(String, String)> {
    let (cid, ifname) = name.strip_suffix(SUFFIX)?.split_once('@')?;
    (valid_container_id(cid) && valid_ifname(ifname)).then(|| (cid.to_string(), ifname.to_string()))
}

impl NetworkDir {
    /// The record of one attachment.
    pub fn attachment_file(&self, container_id: &str, ifname: &str) -> Result<PathBuf> {
        Ok(self
            .attachments_dir()
            .join(attachment_file_name(container_id, ifname)?))
    }

    /// The record, or `None` when there is none.
    pub fn read_attachment(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<serde_json::Value>> {
        read_json(&self.attachment_file(container_id, ifname)?)
    }

    /// Writes (or replaces) the record, atomically.
    pub fn write_attachment(
        &self,
        container_id: &str,
        ifname: &str,
        record: &serde_json::Value,
    ) -> Result<()> {
        let path = self.attachment_file(container_id, ifname)?;
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let dir = self.attachments_dir();
        std::fs::create_dir_all(&dir).map_err(io)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            attachment_file_name(container_id, ifname)?,
            std::process::id()
        ));
        let bytes = serde_json::to_vec_pretty(record).expect("a Value serializes");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io)
    }

    /// Gone is success.
    pub fn remove_attachment(&self, container_id: &str, ifname: &str) -> Result<()> {
        remove(&self.attachment_file(container_id, ifname)?)
    }

    /// The host subnets this host's containers are attached on, from the records' `"subnet"`
    /// (the plugin writes it; it is the one key of a record the agent reads): a restarted agent
    /// whose lease.json is gone (it revoked the lease on SIGTERM) asks for this subnet again
    /// rather than leasing a new one under containers that still use the old one. Records that
    /// do not parse are skipped (DEL reports them; they decide nothing here).
    pub fn attached_subnets(&self) -> Result<Vec<ipnetwork::IpNetwork>> {
        let mut v: Vec<ipnetwork::IpNetwork> = Vec::new();
        for (cid, ifname) in self.attachments()? {
            let subnet = match self.read_attachment(&cid, &ifname) {
                Ok(Some(rec)) => rec
                    .get("subnet")
                    .and_then(|s| s.as_str())
                    .and_then(|s| s.parse().ok()),
                _ => None,
            };
            if let Some(s) = subnet
                && !v.contains(&s)
            {
                v.push(s);
            }
        }
        Ok(v)
    }

    /// Every attachment with a record, sorted; none when the directory does not exist.
    pub fn attachments(&self) -> Result<Vec<(String, String)>> {
        let dir = self.attachments_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::Io { path: dir, source }),
        };
        let mut v: Vec<(String, String)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_attachment_file_name(&e.file_name().to_string_lossy()))
            .collect();
        v.sort();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_round_trip_and_list_only_valid_names() {
        let root = tempfile::tempdir().unwrap();
        let d = NetworkDir::new(root.path(), "ov1").unwrap();
        assert!(d.attachments().unwrap().is_empty());
        assert_eq!(d.read_attachment("c1", "eth0").unwrap(), None);
        d.write_attachment("c1", "eth0", &json!({"a": 1})).unwrap();
        d.write_attachment("c_2.x-y", "net@1", &json!({"b": 2}))
            .unwrap();
        std::fs::write(d.attachments_dir().join("stray.json"), "{}").unwrap();
        std::fs::write(d.attachments_dir().join(".c3@eth0.json.1.tmp"), "{}").unwrap();
        assert_eq!(
            d.attachments().unwrap(),
            vec![
                ("c1".to_string(), "eth0".to_string()),
                ("c_2.x-y".to_string(), "net@1".to_string())
            ]
        );
        assert_eq!(
            d.read_attachment("c1", "eth0").unwrap(),
            Some(json!({"a": 1}))
        );
        assert!(
            d.attached_subnets().unwrap().is_empty(),
            "no \"subnet\" key"
        );
        d.write_attachment("c3", "eth0", &json!({"subnet": "10.200.3.0/24"}))
            .unwrap();
        d.write_attachment("c4", "eth0", &json!({"subnet": "10.200.3.0/24"}))
            .unwrap();
        assert_eq!(
            d.attached_subnets().unwrap(),
            vec!["10.200.3.0/24".parse::<ipnetwork::IpNetwork>().unwrap()]
        );
        d.remove_attachment("c3", "eth0").unwrap();
        d.remove_attachment("c4", "eth0").unwrap();
        d.remove_attachment("c1", "eth0").unwrap();
        d.remove_attachment("c1", "eth0").unwrap();
        assert_eq!(d.attachments().unwrap().len(), 1);
    }

    #[test]
    fn names_that_could_escape_or_collide_are_refused() {
        for (cid, ifname) in [
            ("../x", "eth0"),
            ("a@b", "eth0"),
            ("", "eth0"),
            ("c1", ""),
            ("c1", "a/b"),
            ("c1", "sixteen-chars-xx"),
        ] {
            assert!(attachment_file_name(cid, ifname).is_err(), "{cid} {ifname}");
        }
        assert!(attachment_file_name(&"c".repeat(250), "eth0").is_err());
        assert_eq!(
            parse_attachment_file_name("c1@eth0.json"),
            Some(("c1".into(), "eth0".into()))
        );
        for bad in ["c1.json", "c1@eth0", "../x@eth0.json", "@eth0.json"] {
            assert_eq!(parse_attachment_file_name(bad), None, "{bad}");
        }
    }
}
