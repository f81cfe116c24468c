//! docker-archive (`docker save`, `podman save`): `manifest.json` lists each image's config and
//! layer members, bottom layer first.
//!
//! ```text
//! manifest.json   [{"Config": "<hex>.json", "RepoTags": ["name:tag"], "Layers": ["<hex>.tar", …]}]
//! <hex>.json      the config; its sha256 is <hex> (the image id)
//! <hex>.tar       a layer, plain or gzip; its uncompressed sha256 is the config's diff_id
//! ```
//! Newer `docker save` names members `blobs/sha256/<hex>`: that hex is the member's digest.

use super::outer::Outer;
use super::{Candidate, LayerRef};
use crate::error::{Error, Result};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The digest a member's name promises, if its name is one (`<hex>.json`, `blobs/sha256/<hex>`).
fn named_digest(name: &str) -> Option<String> {
    let base = name.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    let d = format!("sha256:{hex}");
    crate::image::digest::hex_of(&d).ok()?;
    Some(d)
}

pub fn candidates(outer: &Outer) -> Result<Vec<Candidate>> {
    let m: Vec<Entry> = serde_json::from_slice(&outer.read("manifest.json")?)
        .map_err(|e| Error::usage(format!("manifest.json: {e}")))?;
    if m.is_empty() {
        return Err(Error::usage("manifest.json lists no image"));
    }
    Ok(m.into_iter()
        .map(|e| Candidate {
            config_digest: named_digest(&e.config),
            config: e.config,
            tags: e.repo_tags.unwrap_or_default(),
            layers: e
                .layers
                .into_iter()
                .map(|l| LayerRef {
                    digest: l.starts_with("blobs/").then(|| named_digest(&l)).flatten(),
                    size: None,
                    member: l,
                })
                .collect(),
        })
        .collect())
}
