//! The image commands' work, for `cli/` (which only prints): import, list, inspect, rmi, prune,
//! diff, commit, export, and the resolution `tether run IMAGE` needs.

use super::config::ImageConfig;
use super::store::{ImageRecord, LayerRecord, Store};
use super::{digest, reference};
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::state::{ContainerState, ImageMount};
use std::path::{Path, PathBuf};

pub fn store(paths: &Paths) -> Result<Store> {
    Store::open(&paths.image_root)
}

pub fn import(paths: &Paths, file: &Path, name: Option<&str>) -> Result<super::import::Imported> {
    super::import::import(&store(paths)?, file, name)
}

/// One row of `tether images`.
pub struct Row {
    pub repository: String,
    pub tag: String,
    pub id: String,
    pub created: String,
    pub size: u64,
}

pub fn list(paths: &Paths) -> Result<Vec<Row>> {
    let s = store(paths)?;
    let refs = s.refs()?;
    let mut rows = Vec::new();
    for img in s.images() {
        let created = ImageConfig::parse(&s.config_bytes(&img.id).unwrap_or_default())
            .ok()
            .and_then(|c| c.created)
            .unwrap_or_default();
        let names: Vec<&String> = refs
            .iter()
            .filter(|(_, v)| **v == img.id)
            .map(|(k, _)| k)
            .collect();
        let row = |repository: String, tag: String| Row {
            repository,
            tag,
            id: img.id["sha256:".len()..][..12].to_string(),
            created: created.clone(),
            size: img.size,
        };
        if names.is_empty() {
            rows.push(row("<none>".into(), "<none>".into()));
        }
        for n in names {
            let (r, t) = reference::split(n);
            rows.push(row(r.into(), t.into()));
        }
    }
    Ok(rows)
}

pub fn inspect(paths: &Paths, r: &str) -> Result<serde_json::Value> {
    let s = store(paths)?;
    let img = s.resolve(r)?;
    let refs = s.refs()?;
    let config: serde_json::Value = serde_json::from_slice(&s.config_bytes(&img.id)?)
        .map_err(|e| Error::usage(format!("stored config of {}: {e}", img.id)))?;
    let layers: Vec<PathBuf> = img
        .layers
        .iter()
        .map(|d| s.layer_fs(d))
        .collect::<Result<_>>()?;
    Ok(serde_json::json!({
        "Id": img.id,
        "RepoTags": refs.iter().filter(|(_, v)| **v == img.id).map(|(k, _)| k).collect::<Vec<_>>(),
        "Created": config.get("created"),
        "Size": img.size,
        "Imported": img.imported,
        "RootFS": {"Type": "layers", "Layers": img.layers},
        "LayerDirs": layers,
        "Config": config.get("config"),
        "Architecture": config.get("architecture"),
        "Os": config.get("os"),
    }))
}

fn users(paths: &Paths, id: &str) -> Vec<ContainerState> {
    crate::state::Store { paths }
        .list()
        .into_iter()
        .filter(|c| c.config.image.as_ref().is_some_and(|i| i.id == id))
        .collect()
}

/// `tether rmi REF`: a name that is one of several names of an image only loses that name (as
/// in Docker); otherwise the image goes, refused while a container uses it unless `force`.
pub fn rmi(paths: &Paths, r: &str, force: bool) -> Result<Vec<String>> {
    let s = store(paths)?;
    let _lock = s.lock()?;
    let img = s.resolve(r)?;
    let mut refs = s.refs()?;
    let names: Vec<String> = refs
        .iter()
        .filter(|(_, v)| **v == img.id)
        .map(|(k, _)| k.clone())
        .collect();
    let by_name = reference::candidates(r)
        .into_iter()
        .find(|c| names.contains(c));
    if let Some(n) = &by_name
        && names.len() > 1
    {
        refs.remove(n);
        s.save_refs(&refs)?;
        return Ok(vec![format!("Untagged: {n}")]);
    }
    let using = users(paths, &img.id);
    if !using.is_empty() && !force {
        let n: Vec<&str> = using.iter().map(|c| c.name.as_str()).collect();
        return Err(Error::usage(format!(
            "image {r} is used by container(s) {}: remove them first or use `tether rmi -f`",
            n.join(", ")
        )));
    }
    let mut out: Vec<String> = s
        .remove_image(&img.id)?
        .into_iter()
        .map(|n| format!("Untagged: {n}"))
        .collect();
    out.push(format!("Deleted: {}", img.id));
    Ok(out)
}

/// `tether image prune`: layers no image uses, and staging debris of dead imports. Layers of images removed with `rmi -f` while a
/// container ran stay while any container record still names them.
pub fn prune(paths: &Paths) -> Result<Vec<(String, u64)>> {
    let s = store(paths)?;
    let _lock = s.lock()?;
    // A container's layers stay even when `rmi -f` removed its image: it still mounts them
    // (layers/<hex>/fs: the diff_id is the parent's name).
    let kept: Vec<String> = crate::state::Store { paths }
        .list()
        .into_iter()
        .filter_map(|c| c.config.image)
        .flat_map(|i| i.lowers)
        .filter_map(|p| {
            p.parent()?
                .file_name()
                .map(|n| format!("sha256:{}", n.to_string_lossy()))
        })
        .collect();
    let swept = s.sweep_tmp();
    if swept > 0 {
        tracing::info!(swept, "removed staging directories of dead imports");
    }
    s.prune_layers_except(&kept)
}

/// Taken by `tether run` while it saves the first record of a container from an image: the
/// store lock, and a check that the image's layers are all still there. `prune` lists records
/// under the same lock, so it either sees this container's record (and keeps its layers), or
/// ran before the check (after `run` resolved the image: `rmi` then `prune` in between), and
/// then the start is refused before anything is made, instead of mounting missing layers.
pub fn hold_layers(paths: &Paths, m: &ImageMount) -> Result<crate::state::Lock> {
    let s = store(paths)?;
    let lock = s.lock()?;
    for l in &m.lowers {
        if !l.parent().is_some_and(|d| d.join("layer.json").is_file()) {
            return Err(Error::usage(format!(
                "image {}: its layer {} was removed (`rmi` and `image prune`) while this container \
                 was starting; import the image again",
                m.reference,
                l.display()
            )));
        }
    }
    Ok(lock)
}

/// What `tether run IMAGE` mounts and applies.
pub struct ForRun {
    pub record: ImageRecord,
    pub config: ImageConfig,
    /// Layer trees, top first.
    pub lowers: Vec<PathBuf>,
    /// The image's /etc/passwd and /etc/group (topmost layer that has them), for a named User.
    pub passwd: Option<PathBuf>,
    pub group: Option<PathBuf>,
}

pub fn for_run(paths: &Paths, r: &str) -> Result<ForRun> {
    let s = store(paths)?;
    let record = s.resolve(r)?;
    let config = ImageConfig::parse(&s.config_bytes(&record.id)?)?;
    if record.layers.is_empty() {
        return Err(Error::usage(format!(
            "image {r} has no layers: overlayfs needs at least one"
        )));
    }
    let mut lowers = Vec::new();
    for d in record.layers.iter().rev() {
        if !s.has_layer(d) {
            return Err(Error::usage(format!(
                "image {r}: layer {d} is missing from the store"
            )));
        }
        lowers.push(s.layer_fs(d)?);
    }
    let find = |f: &str| lowers.iter().map(|l| l.join(f)).find(|p| p.is_file());
    Ok(ForRun {
        passwd: find("etc/passwd"),
        group: find("etc/group"),
        record,
        config,
        lowers,
    })
}

fn image_of(paths: &Paths, name: &str) -> Result<(ContainerState, ImageMount)> {
    let st = crate::state::Store { paths }.find(name)?;
    let m = st.config.image.clone().ok_or_else(|| {
        Error::usage(format!(
            "container {name} was not run from an image (it has no writable layer)"
        ))
    })?;
    Ok((st, m))
}

pub fn diff(paths: &Paths, name: &str) -> Result<Vec<(char, String)>> {
    let (_, m) = image_of(paths, name)?;
    super::diff::changes(&m.upper, &m.lowers)
        .map_err(|e| Error::io(format!("read {}", m.upper.display()), e))
}

/// `tether commit NAME REF`: the container's upper dir becomes a layer on top of its image's.
pub fn commit(paths: &Paths, name: &str, r: &str) -> Result<String> {
    let tag = reference::normalize(r)?;
    let (_, m) = image_of(paths, name)?;
    let s = store(paths)?;
    let base = s.image(&m.id)?;
    let staging = s.staging()?;
    let tar = staging.0.join("layer.tar");
    let f = std::fs::File::create(&tar).map_err(|e| Error::io("create", e))?;
    let (diff_id, _) = super::pack::pack_dir(&m.upper, std::io::BufWriter::new(f), true)?;
    let dir = staging.0.join("layer");
    std::fs::create_dir_all(dir.join("fs")).map_err(|e| Error::io("create", e))?;
    let opened = std::fs::File::open(&tar).map_err(|e| Error::io("open", e))?;
    let mut tap = digest::HashingReader::new(opened);
    let un = super::unpack::unpack_layer(&mut tap, &dir.join("fs"))?;
    let (read_back, _) = tap.finish().map_err(|e| Error::io("read layer", e))?;
    if un.diff_id.unwrap_or(read_back.clone()) != diff_id {
        return Err(Error::Setup(format!(
            "commit: layer digest changed while reading it back ({diff_id} vs {read_back})"
        )));
    }
    let mut cfg: serde_json::Value = serde_json::from_slice(&s.config_bytes(&m.id)?)
        .map_err(|e| Error::usage(format!("stored config of {}: {e}", m.id)))?;
    let now = crate::state::now_rfc3339();
    let mut diff_ids = base.layers.clone();
    diff_ids.push(diff_id.clone());
    cfg["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": diff_ids});
    cfg["created"] = serde_json::json!(now);
    let entry = serde_json::json!({"created": now, "created_by": format!("tether commit {name}")});
    match cfg.get_mut("history").and_then(|h| h.as_array_mut()) {
        Some(h) => h.push(entry),
        None => cfg["history"] = serde_json::json!([entry]),
    }
    let bytes = serde_json::to_vec(&cfg).expect("json");
    let id = digest::of_bytes(&bytes);
    let rec = ImageRecord {
        id: id.clone(),
        layers: diff_ids,
        size: base.size + un.size,
        imported: now,
    };
    let _lock = s.lock()?;
    s.commit_layer(
        &dir,
        &LayerRecord {
            diff_id,
            size: un.size,
        },
    )?;
    s.commit_image(&staging, &bytes, &rec)?;
    let mut refs = s.refs()?;
    refs.insert(tag, id.clone());
    s.save_refs(&refs)?;
    Ok(id)
}

pub fn export(paths: &Paths, r: &str, file: &Path) -> Result<String> {
    let s = store(paths)?;
    let img = s.resolve(r)?;
    let tag = reference::candidates(r)
        .into_iter()
        .find(|c| s.refs().is_ok_and(|refs| refs.get(c) == Some(&img.id)));
    super::export::export(&s, &img, tag.as_deref(), file)
}
