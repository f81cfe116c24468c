//! The image store, under the image root (`--image-root`, default `/var/lib/tether`):
//!
//! ```text
//! <image-root>/                       0700: setuid files of layers are reachable only from containers
//!   lock                              flock: every change of layers/, images/, refs.json
//!   layers/<diff_id hex>/
//!     fs/                             the unpacked layer, overlayfs whiteouts (an overlay lowerdir)
//!     layer.json                      {"diffId", "size"}
//!   images/<image id hex>/            image id = sha256 of the config, as Docker's
//!     config.json                     the image config, byte for byte as imported
//!     image.json                      {"id", "layers": [diff_id, bottom first], "size", "imported"}
//!   refs.json                         {"name:tag": "sha256:<image id>"}, replaced atomically
//!   tmp/<random>/                     staging: an import is unpacked here, then renamed in;
//!                                     flocked by its importer while it lives
//!   tmp/rm-<random>/                  a layer or image being removed (renamed out first)
//! ```
//!
//! Layers are content addressed by diff_id (the uncompressed tar's digest): a layer two images
//! share is unpacked once. Everything enters by rename from tmp/, under the lock, so a killed
//! import leaves only tmp/ debris and never a half image in `images`. The debris goes at the next
//! import or `image prune`: a staging directory whose flock is free has no live importer (the
//! kernel drops a dead process's flocks), and a staging directory is made and flocked under the
//! store lock, so the sweep, under it too, never sees one made but not yet locked.

use crate::error::{Context, Error, Result, at};
use crate::state::Lock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub struct Store {
    pub root: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    pub diff_id: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub id: String,
    pub layers: Vec<String>,
    pub size: u64,
    pub imported: String,
}

/// A staging directory under tmp/, flocked while it lives (so no sweep takes it), removed when
/// dropped unless renamed away.
pub struct Staging(
    pub PathBuf,
    #[allow(dead_code)] nix::fcntl::Flock<std::fs::File>,
);

impl Drop for Staging {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub type Refs = BTreeMap<String, String>;

fn mkdir(p: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .ctx(at("create", p))
}

/// A non-blocking exclusive flock on directory `p`; `None` while someone else holds one.
fn try_flock(p: &Path) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    let f = std::fs::File::open(p).ctx(at("open", p))?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).ctx(at("lock", p)),
    }
}

impl Store {
    /// Opens (creating) the store.
    pub fn open(root: &Path) -> Result<Store> {
        mkdir(root, 0o700)?;
        for d in ["layers", "images", "tmp"] {
            mkdir(&root.join(d), 0o700)?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn lock(&self) -> Result<Lock> {
        Lock::acquire(&self.root.join("lock"))
    }

    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("layers")
            .join(super::digest::hex_of(diff_id)?))
    }
    /// The layer's tree: an overlayfs lowerdir.
    pub fn layer_fs(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.layer_dir(diff_id)?.join("fs"))
    }
    pub fn has_layer(&self, diff_id: &str) -> bool {
        self.layer_dir(diff_id)
            .is_ok_and(|d| d.join("layer.json").exists())
    }
    pub fn image_dir(&self, id: &str) -> Result<PathBuf> {
        Ok(self.root.join("images").join(super::digest::hex_of(id)?))
    }

    pub fn staging(&self) -> Result<Staging> {
        let p = self.root.join("tmp").join(crate::state::new_id()?);
        let _lock = self.lock()?;
        self.sweep_tmp();
        mkdir(&p, 0o700)?;
        let lock =
            try_flock(&p)?.ok_or_else(|| Error::Setup(format!("{} is locked", p.display())))?;
        Ok(Staging(p, lock))
    }

    /// Removes what dead imports, commits, exports and removals left in tmp/: directories
    /// whose flock is free (their maker is gone) and `rm-` leftovers. Under the lock. Returns
    /// how many went.
    pub fn sweep_tmp(&self) -> usize {
        let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.flatten() {
            let p = e.path();
            // A removal renames under the lock and finishes before unlocking: an rm- dir seen
            // under the lock is a dead one's.
            let dead = e.file_name().to_string_lossy().starts_with("rm-")
                || !e.file_type().is_ok_and(|t| t.is_dir())
                || matches!(try_flock(&p), Ok(Some(_)));
            if dead {
                let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                match r {
                    Ok(()) => n += 1,
                    Err(err) => tracing::warn!(path = %p.display(), %err, "sweeping staging"),
                }
            }
        }
        n
    }

    /// Moves a staged layer (a dir with fs/) into the store; a layer already there wins (the
    /// same diff_id is the same content). Under the lock.
    pub fn commit_layer(&self, staged: &Path, rec: &LayerRecord) -> Result<()> {
        let dst = self.layer_dir(&rec.diff_id)?;
        if self.has_layer(&rec.diff_id) {
            return Ok(());
        }
        if dst.exists() {
            // A directory without layer.json: debris of a dead commit.
            std::fs::remove_dir_all(&dst).ctx(at("remove", &dst))?;
        }
        let json = serde_json::to_vec_pretty(rec).expect("serializable");
        std::fs::write(staged.join("layer.json"), json).ctx(at("write", staged))?;
        std::fs::rename(staged, &dst).ctx(at("rename into", &dst))
    }

    /// Writes an image (config bytes + record) by rename. Under the lock.
    pub fn commit_image(&self, staging: &Staging, config: &[u8], rec: &ImageRecord) -> Result<()> {
        let dst = self.image_dir(&rec.id)?;
        if dst.join("image.json").exists() {
            return Ok(());
        }
        let d = staging.0.join("image");
        mkdir(&d, 0o700)?;
        std::fs::write(d.join("config.json"), config).ctx(at("write", &d))?;
        let json = serde_json::to_vec_pretty(rec).expect("serializable");
        std::fs::write(d.join("image.json"), json).ctx(at("write", &d))?;
        if dst.exists() {
            std::fs::remove_dir_all(&dst).ctx(at("remove", &dst))?;
        }
        std::fs::rename(&d, &dst).ctx(at("rename into", &dst))
    }

    pub fn refs(&self) -> Result<Refs> {
        let p = self.root.join("refs.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::State {
                path: p.display().to_string(),
                source: e,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Refs::new()),
            Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
        }
    }

    /// Replaces refs.json (under the lock, which the caller holds).
    pub fn save_refs(&self, refs: &Refs) -> Result<()> {
        let p = self.root.join("refs.json");
        let json = serde_json::to_vec_pretty(refs).expect("serializable");
        crate::atomic::write_replacing(&p, &json).ctx(at("write", &p))
    }

    pub fn image(&self, id: &str) -> Result<ImageRecord> {
        let p = self.image_dir(id)?.join("image.json");
        let b = std::fs::read(&p).ctx(at("read", &p))?;
        serde_json::from_slice(&b).map_err(|e| Error::State {
            path: p.display().to_string(),
            source: e,
        })
    }

    pub fn config_bytes(&self, id: &str) -> Result<Vec<u8>> {
        let p = self.image_dir(id)?.join("config.json");
        std::fs::read(&p).ctx(at("read", &p))
    }

    /// Every complete image.
    pub fn images(&self) -> Vec<ImageRecord> {
        let mut v: Vec<ImageRecord> = std::fs::read_dir(self.root.join("images"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let b = std::fs::read(e.path().join("image.json")).ok()?;
                serde_json::from_slice(&b).ok()
            })
            .collect();
        v.sort_by(|a, b| b.imported.cmp(&a.imported).then(a.id.cmp(&b.id)));
        v
    }

    /// An image by name[:tag], full id, or a unique id prefix (12 hex digits or more is usual).
    pub fn resolve(&self, r: &str) -> Result<ImageRecord> {
        let refs = self.refs()?;
        for cand in super::reference::candidates(r) {
            if let Some(id) = refs.get(&cand) {
                return self.image(id);
            }
        }
        let hex = r.strip_prefix("sha256:").unwrap_or(r);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let found: Vec<ImageRecord> = self
                .images()
                .into_iter()
                .filter(|i| i.id["sha256:".len()..].starts_with(hex))
                .collect();
            match found.len() {
                1 => return Ok(found.into_iter().next().expect("one")),
                0 => {}
                _ => return Err(Error::usage(format!("image id prefix {r} is ambiguous"))),
            }
        }
        Err(Error::usage(format!(
            "no such image: {r} (see `tether images`; bring one in with `tether image import FILE`)"
        )))
    }

    /// Removes an image's record and the refs naming it (layers stay for `image prune`). Under
    /// the lock.
    pub fn remove_image(&self, id: &str) -> Result<Vec<String>> {
        let mut refs = self.refs()?;
        let names: Vec<String> = refs
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(k, _)| k.clone())
            .collect();
        refs.retain(|_, v| v != id);
        self.save_refs(&refs)?;
        let d = self.image_dir(id)?;
        // Rename first: a reader never sees a half-removed image.
        let gone = self
            .root
            .join("tmp")
            .join(format!("rm-{}", crate::state::new_id()?));
        if d.exists() {
            std::fs::rename(&d, &gone).ctx(at("remove", &d))?;
            std::fs::remove_dir_all(&gone).ctx(at("remove", &gone))?;
        }
        Ok(names)
    }

    /// Removes every layer no image uses (nor `keep`); returns their diff_ids. Under the lock.
    pub fn prune_layers_except(&self, keep: &[String]) -> Result<Vec<(String, u64)>> {
        let mut used: std::collections::HashSet<String> =
            self.images().into_iter().flat_map(|i| i.layers).collect();
        used.extend(keep.iter().cloned());
        let mut removed = Vec::new();
        for e in std::fs::read_dir(self.root.join("layers"))
            .ctx("read layers")?
            .flatten()
        {
            let diff_id = format!("sha256:{}", e.file_name().to_string_lossy());
            if used.contains(&diff_id) {
                continue;
            }
            let size = std::fs::read(e.path().join("layer.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<LayerRecord>(&b).ok())
                .map_or(0, |r| r.size);
            let gone = self
                .root
                .join("tmp")
                .join(format!("rm-{}", crate::state::new_id()?));
            std::fs::rename(e.path(), &gone).ctx(at("remove", &e.path()))?;
            std::fs::remove_dir_all(&gone).ctx(at("remove", &gone))?;
            removed.push((diff_id, size));
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_takes_staging_dirs_no_live_importer_holds_and_keeps_live_ones() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let live = s.staging().unwrap();
        let dead = s.root.join("tmp/deadbeef");
        std::fs::create_dir_all(dead.join("L0-0/fs")).unwrap();
        std::fs::create_dir_all(s.root.join("tmp/rm-1/fs")).unwrap();
        let _l = s.lock().unwrap();
        assert_eq!(s.sweep_tmp(), 2);
        assert!(live.0.is_dir(), "flocked by a live importer: kept");
        assert!(!dead.exists());
        drop(_l);
        let p = live.0.clone();
        drop(live);
        assert!(!p.exists());
    }
}
