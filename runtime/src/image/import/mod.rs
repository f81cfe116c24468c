//! `tether image import FILE`: an archive → images in the store. Nothing is used before it is
//! verified, and nothing is visible before it is complete:
//!
//! ```text
//! FILE ─▶ outer.rs (index members) ─▶ docker_archive.rs | oci_layout.rs ─▶ Candidates
//!   for each candidate:
//!     config bytes ── sha256 = the name/descriptor's digest? ─▶ image id
//!     each layer not in the store:
//!        member ─tap(sha256 raw)─▶ unpack.rs ─▶ tmp/<x>/L<n>/fs   (diff_id hashed on the way)
//!        raw digest = descriptor's?  diff_id = config's rootfs.diff_ids[n]?  else refuse
//!   lock ─▶ rename layers into layers/, image into images/, refs.json replaced ─▶ unlock
//! ```
//! A failure at any step drops the staging directory: the store is as it was. A kill leaves it
//! to the next import's (or `image prune`'s) sweep, which takes staging dirs no live importer
//! flocks (store.rs).

mod docker_archive;
mod oci_layout;
mod outer;

use super::config::ImageConfig;
use super::digest::{self, ThreadedHashingReader};
use super::store::{ImageRecord, LayerRecord, Store};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// One image an archive describes.
pub struct Candidate {
    /// The member holding the config.
    pub config: String,
    /// What the config's sha256 must be, when the archive says.
    pub config_digest: Option<String>,
    pub tags: Vec<String>,
    pub layers: Vec<LayerRef>,
}

pub struct LayerRef {
    pub member: String,
    /// The blob's own digest (compressed, if it is), when the archive says.
    pub digest: Option<String>,
    pub size: Option<u64>,
}

/// What an import brought in: (image id, names given to it).
pub type Imported = Vec<(String, Vec<String>)>;

pub fn import(store: &Store, file: &Path, name: Option<&str>) -> Result<Imported> {
    let staging = store.staging()?;
    let mut src = file.to_path_buf();
    // A gzip-compressed archive (`podman save | gzip`) is decompressed once into staging.
    let mut head = [0u8; 2];
    let n = std::fs::File::open(file)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| Error::io(format!("open {}", file.display()), e))?;
    if n == 2 && head == [0x1f, 0x8b] {
        src = staging.0.join("archive.tar");
        let f = std::fs::File::open(file).map_err(|e| Error::io("open", e))?;
        let mut out = std::fs::File::create(&src).map_err(|e| Error::io("create", e))?;
        std::io::copy(&mut flate2::read::MultiGzDecoder::new(f), &mut out).map_err(|e| {
            Error::usage(format!(
                "{}: gzip stream is corrupt or truncated: {e}",
                file.display()
            ))
        })?;
    }
    let outer = outer::Outer::index(&src)?;
    let candidates = if outer.has("manifest.json") {
        docker_archive::candidates(&outer)?
    } else if outer.has("index.json") && outer.has("oci-layout") {
        oci_layout::candidates(&outer)?
    } else {
        return Err(Error::usage(format!(
            "{}: neither a docker-archive (manifest.json) nor an OCI layout (oci-layout, index.json)",
            file.display()
        )));
    };
    let forced = match name {
        Some(_) if candidates.len() > 1 => {
            return Err(Error::usage(format!(
                "{}: holds {} images; --name needs exactly one",
                file.display(),
                candidates.len()
            )));
        }
        Some(n) => Some(super::reference::normalize(n)?),
        None => None,
    };
    let mut staged: HashMap<String, (std::path::PathBuf, LayerRecord)> = HashMap::new();
    let mut images = Vec::new();
    for (ci, c) in candidates.iter().enumerate() {
        let config = outer.read(&c.config)?;
        let id = digest::of_bytes(&config);
        if let Some(want) = &c.config_digest
            && *want != id
        {
            return Err(Error::usage(format!(
                "image config {}: sha256 is {id}, the archive says {want}: refused",
                c.config
            )));
        }
        let cfg = ImageConfig::parse(&config)?;
        let diff_ids = &cfg.rootfs.diff_ids;
        if diff_ids.len() != c.layers.len() {
            return Err(Error::usage(format!(
                "image {id}: the config lists {} diff_ids, the manifest {} layers",
                diff_ids.len(),
                c.layers.len()
            )));
        }
        let mut size = 0;
        for (li, (l, diff_id)) in c.layers.iter().zip(diff_ids).enumerate() {
            digest::hex_of(diff_id)?;
            if let Some((_, r)) = staged.get(diff_id) {
                size += r.size;
                continue;
            }
            if store.has_layer(diff_id) {
                size += existing_size(store, diff_id);
                continue;
            }
            let dir = staging.0.join(format!("L{ci}-{li}"));
            let fs = dir.join("fs");
            std::fs::create_dir_all(&fs).map_err(|e| Error::io("create staging", e))?;
            let rec = unpack_verified(&outer, l, diff_id, &fs)?;
            size += rec.size;
            staged.insert(diff_id.clone(), (dir, rec));
        }
        let tags = match &forced {
            Some(n) => vec![n.clone()],
            None => c
                .tags
                .iter()
                .map(|t| super::reference::normalize(t))
                .collect::<Result<Vec<_>>>()?,
        };
        let rec = ImageRecord {
            id: id.clone(),
            layers: diff_ids.clone(),
            size,
            imported: crate::state::now_rfc3339(),
        };
        images.push((config, rec, tags));
    }
    crate::hook::kill_point("image-staged");
    let _lock = store.lock()?;
    for (dir, rec) in staged.values() {
        store.commit_layer(dir, rec)?;
    }
    // Killed here: layers without an image, which no listing shows and `image prune` removes.
    crate::hook::kill_point("image-layers");
    let mut refs = store.refs()?;
    let mut out = Vec::new();
    for (config, rec, tags) in images {
        store.commit_image(&staging, &config, &rec)?;
        for t in &tags {
            refs.insert(t.clone(), rec.id.clone());
        }
        out.push((rec.id, tags));
    }
    store.save_refs(&refs)?;
    Ok(out)
}

fn existing_size(store: &Store, diff_id: &str) -> u64 {
    store
        .layer_dir(diff_id)
        .ok()
        .and_then(|d| std::fs::read(d.join("layer.json")).ok())
        .and_then(|b| serde_json::from_slice::<LayerRecord>(&b).ok())
        .map_or(0, |r| r.size)
}

/// Unpacks one layer member into `fs`, then checks both digests; an error leaves `fs` to the
/// staging directory's removal.
fn unpack_verified(
    outer: &outer::Outer,
    l: &LayerRef,
    diff_id: &str,
    fs: &Path,
) -> Result<LayerRecord> {
    let (r, member_size) = outer.open(&l.member)?;
    let mut tap = ThreadedHashingReader::new(r);
    let un = super::unpack::unpack_layer(&mut tap, fs)
        .map_err(|e| Error::usage(format!("layer {}: {e}", l.member)))?;
    let (raw, count) = tap
        .finish()
        .map_err(|e| Error::io(format!("read layer {}", l.member), e))?;
    if count != member_size || l.size.is_some_and(|s| s != count) {
        return Err(Error::usage(format!(
            "layer {}: {count} bytes, expected {}: truncated archive?",
            l.member,
            l.size.unwrap_or(member_size)
        )));
    }
    if let Some(want) = &l.digest
        && *want != raw
    {
        return Err(Error::usage(format!(
            "layer {}: sha256 is {raw}, the manifest says {want}: refused",
            l.member
        )));
    }
    let got = un.diff_id.unwrap_or(raw);
    if got != diff_id {
        return Err(Error::usage(format!(
            "layer {}: uncompressed sha256 is {got}, the config's diff_id is {diff_id}: refused",
            l.member
        )));
    }
    Ok(LayerRecord {
        diff_id: diff_id.to_string(),
        size: un.size,
    })
}
