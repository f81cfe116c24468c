//! `tether image export REF FILE`: a docker-archive that `podman load` and `docker load` read.
//!
//! ```text
//! FILE (written as FILE.tmp, renamed when complete)
//!   <diff_id hex>.tar     each layer, packed again from the store (pack.rs)
//!   <image id hex>.json   the config, with rootfs.diff_ids of those tars
//!   manifest.json         [{"Config", "RepoTags": [REF], "Layers"}]
//! ```
//! The store keeps layers unpacked only (one copy on disk), so the tars are made anew by
//! pack.rs. What is preserved, exactly:
//!
//! ```text
//! always      each file's content, type, owner, mode (setuid too), mtime (seconds), kept xattrs
//!             (xattr.rs), hard links, symlink targets; whiteouts and opaque dirs; the config
//!             except rootfs.diff_ids; the tag
//! byte-stable the export file: the same image exports to the same bytes (sorted entries, members
//!             with mtime 0 and owner 0); its re-import gets the id the export printed, and
//!             exports again to the same bytes (unpack ∘ pack is a fixed point)
//! not kept    the imported layer tars' bytes (compression, entry order and header format, a
//!             `./` entry, sub-second times, skipped xattrs): an image tether did not write
//!             exports under new diff_ids and so a new image id (`tether image export` prints it)
//! ```

use super::digest;
use super::store::{ImageRecord, Store};
use crate::error::{Error, Result};
use std::path::Path;

pub fn export(store: &Store, img: &ImageRecord, tag: Option<&str>, file: &Path) -> Result<String> {
    let staging = store.staging()?;
    let mut layers = Vec::new();
    for (i, d) in img.layers.iter().enumerate() {
        let p = staging.0.join(format!("{i}.tar"));
        let f = std::fs::File::create(&p).map_err(|e| Error::io("create", e))?;
        let (diff_id, _) =
            super::pack::pack_dir(&store.layer_fs(d)?, std::io::BufWriter::new(f), false)?;
        layers.push((p, diff_id));
    }
    let mut cfg: serde_json::Value = serde_json::from_slice(&store.config_bytes(&img.id)?)
        .map_err(|e| Error::usage(format!("stored config of {}: {e}", img.id)))?;
    cfg["rootfs"] = serde_json::json!({
        "type": "layers",
        "diff_ids": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
    });
    let cfg_bytes = serde_json::to_vec(&cfg).expect("json");
    let id = digest::of_bytes(&cfg_bytes);
    let id_hex = digest::hex_of(&id)?.to_string();
    let mut names = Vec::new();
    let tmp = file.with_file_name(format!(
        ".{}.{}.tmp",
        file.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let r = (|| -> std::io::Result<()> {
        let out = std::fs::File::create(&tmp)?;
        let mut b = tar::Builder::new(std::io::BufWriter::new(out));
        // Members get fixed metadata (not the staging files'), so the archive is byte-stable.
        let member = |len: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_size(len);
            h.set_mode(0o644);
            h.set_mtime(0);
            h
        };
        for (p, d) in &layers {
            let name = format!("{}.tar", &d["sha256:".len()..]);
            if !names.contains(&name) {
                let f = std::fs::File::open(p)?;
                let mut h = member(f.metadata()?.len());
                b.append_data(&mut h, &name, f)?;
                names.push(name);
            }
        }
        let mut add = |name: &str, data: &[u8]| {
            let mut h = member(data.len() as u64);
            b.append_data(&mut h, name, data)
        };
        add(&format!("{id_hex}.json"), &cfg_bytes)?;
        let manifest = serde_json::json!([{
            "Config": format!("{id_hex}.json"),
            "RepoTags": tag.into_iter().collect::<Vec<_>>(),
            "Layers": layers.iter().map(|(_, d)| format!("{}.tar", &d["sha256:".len()..])).collect::<Vec<_>>(),
        }]);
        add(
            "manifest.json",
            &serde_json::to_vec(&manifest).expect("json"),
        )?;
        let mut w = b.into_inner()?;
        std::io::Write::flush(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("write {}", file.display()), e));
    }
    Ok(id)
}
