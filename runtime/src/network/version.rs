//! VERSION negotiation for the lists tether generates, and the cache of the plugins' answers
//! (`<root>/cni/plugin-versions.json`, per binary).

use crate::paths::Paths;
use cni::runtime::ConfList;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Lowers `list.cni_version` to the newest version that every plugin of the list found on the
/// search path supports, asking each with VERSION as libcni's `ValidateNetworkList` does. Only for
/// the lists tether generates: Debian's reference plugins, for example, stop at 1.0.0, and the
/// built-in network must work with them too. Plugins that are missing or do not answer are left to
/// fail on use, with their own error. Answers are remembered in `<root>/cni/plugin-versions.json`
/// (see [`VersionCache`]).
pub fn negotiate_version(list: &mut ConfList, paths: &Paths) {
    let mut types: Vec<&str> = Vec::new();
    for p in &list.plugins {
        for ty in [p.get("type"), p.pointer("/ipam/type")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !types.contains(&ty) {
                types.push(ty);
            }
        }
    }
    let mut common: Vec<&str> = cni::version::ALL
        .iter()
        .copied()
        .filter(|v| cni::version::at_least(&list.cni_version, v))
        .collect();
    let stdin = json!({ "cniVersion": list.cni_version }).to_string();
    let search: Vec<String> = paths
        .cni_path
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let env = [
        ("CNI_COMMAND", "VERSION".to_string()),
        ("CNI_PATH", search.join(":")),
    ];
    let mut cache = VersionCache::load(&paths.cni_cache());
    for ty in types {
        let Ok(bin) = cni::runtime::find_plugin(ty, &paths.cni_path) else {
            continue;
        };
        let supported = cache.get_or_probe(&bin, || {
            let answer = tracing::debug_span!("version_probe", plugin = ty)
                .in_scope(|| cni::invoke::exec_plugin(&bin, &env, stdin.as_bytes()));
            match answer {
                Ok(Some(v)) => Some(
                    v.get("supportedVersions")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                ),
                Ok(None) => {
                    tracing::debug!(plugin = ty, "VERSION printed nothing");
                    None
                }
                Err(e) => {
                    tracing::debug!(plugin = ty, error = %e, "VERSION failed");
                    None
                }
            }
        });
        if let Some(supported) = supported {
            common.retain(|c| supported.iter().any(|s| s == c));
        }
    }
    cache.store();
    if let Some(best) = common.last()
        && *best != list.cni_version
    {
        tracing::info!(
            network = %list.name,
            from = %list.cni_version,
            to = best,
            "lowering cniVersion to what the plugins support"
        );
        list.cni_version = best.to_string();
    }
}

/// A plugin binary's identity on disk: any replacement, rewrite or `touch` changes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(p: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionEntry {
    stamp: FileStamp,
    supported_versions: Vec<String>,
}

/// The VERSION answers of plugin binaries by path, valid while the binary's [`FileStamp`] is
/// unchanged. Exec'ing every plugin of the built-in network on each `tether run` cost 1 to 2.5 ms a
/// plugin for an answer that changes only with the binary. Failed probes are not remembered.
struct VersionCache {
    file: PathBuf,
    entries: BTreeMap<PathBuf, VersionEntry>,
    dirty: bool,
}

impl VersionCache {
    fn load(cache_dir: &Path) -> VersionCache {
        let file = cache_dir.join("plugin-versions.json");
        let entries = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        VersionCache {
            file,
            entries,
            dirty: false,
        }
    }

    fn get_or_probe(
        &mut self,
        bin: &Path,
        probe: impl FnOnce() -> Option<Vec<String>>,
    ) -> Option<Vec<String>> {
        // Stamped before the probe: a binary replaced meanwhile gets a new stamp, so a stale
        // answer is never filed under the new binary.
        let stamp = FileStamp::of(bin)?;
        if let Some(e) = self.entries.get(bin).filter(|e| e.stamp == stamp) {
            return Some(e.supported_versions.clone());
        }
        let supported = probe()?;
        self.entries.insert(
            bin.to_path_buf(),
            VersionEntry {
                stamp,
                supported_versions: supported.clone(),
            },
        );
        self.dirty = true;
        Some(supported)
    }

    /// Best effort: without the file the next run just probes again.
    fn store(&self) {
        if !self.dirty {
            return;
        }
        let bytes = serde_json::to_vec(&self.entries).expect("entries serialize");
        let r = self
            .file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| crate::atomic::write_replacing(&self.file, &bytes));
        if let Err(e) = r {
            tracing::debug!(file = %self.file.display(), error = %e, "plugin version cache not saved");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::builtin_bridge;
    use crate::network::test_paths as paths;

    /// A fake plugin that answers VERSION with `versions` and counts its runs in `<dir>/runs`.
    fn fake_plugin(dir: &Path, name: &str, versions: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let script = format!(
            "#!/bin/sh\necho {name} >> {runs}\necho '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[{versions}]}}'\n",
            runs = dir.join("runs").display()
        );
        std::fs::write(&tmp, script).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A new inode each time, as `install` does (and no writable fd to race an exec).
        std::fs::rename(&tmp, &p).unwrap();
    }

    fn runs(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("runs"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn version_answers_are_cached_until_the_binary_changes() {
        let (d, mut p) = paths();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        p.cni_path = vec![bin.clone()];
        fake_plugin(&bin, "bridge", r#""0.4.0","1.0.0","1.1.0""#);
        fake_plugin(&bin, "host-local", r#""0.4.0","1.0.0""#);
        let negotiated = || {
            let mut l = builtin_bridge(&p);
            negotiate_version(&mut l, &p);
            l.cni_version
        };
        assert_eq!(negotiated(), "1.0.0");
        assert_eq!(runs(&bin), ["bridge", "host-local"]);
        assert_eq!(negotiated(), "1.0.0");
        assert_eq!(runs(&bin), ["bridge", "host-local"], "second run probed");
        assert!(p.cni_cache().join("plugin-versions.json").is_file());
        // An upgraded host-local is asked again, and only it.
        fake_plugin(&bin, "host-local", r#""0.4.0","1.0.0","1.1.0""#);
        assert_eq!(negotiated(), "1.1.0");
        assert_eq!(runs(&bin), ["bridge", "host-local", "host-local"]);
        // A plugin whose VERSION fails is not remembered: asked every time.
        std::fs::write(bin.join(".bridge.tmp"), "#!/bin/sh\nexit 1\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                bin.join(".bridge.tmp"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }
        std::fs::rename(bin.join(".bridge.tmp"), bin.join("bridge")).unwrap();
        assert_eq!(negotiated(), "1.1.0");
        fake_plugin(&bin, "bridge", r#""0.4.0","1.0.0""#);
        assert_eq!(negotiated(), "1.0.0");
        assert_eq!(runs(&bin).iter().filter(|r| *r == "bridge").count(), 2);
    }
}
