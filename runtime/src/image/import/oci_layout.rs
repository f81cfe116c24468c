//! OCI image layout archives (`podman save --format oci-archive`, `skopeo copy … oci-archive:`):
//!
//! ```text
//! oci-layout               {"imageLayoutVersion": "1.0.0"}
//! index.json               {"manifests": [descriptor of a manifest (or of a nested index)]}
//! blobs/sha256/<hex>       every blob; a descriptor's digest and size must match it
//!   manifest               {"config": descriptor, "layers": [descriptor, bottom first]}
//! ```

use super::outer::Outer;
use super::{Candidate, LayerRef};
use crate::error::{Error, Result};
use crate::image::digest;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn member(d: &Descriptor) -> Result<String> {
    Ok(format!("blobs/sha256/{}", digest::hex_of(&d.digest)?))
}

/// A small blob, checked against its descriptor before it is parsed.
fn read_blob(outer: &Outer, d: &Descriptor) -> Result<Vec<u8>> {
    let b = outer.read(&member(d)?)?;
    let got = digest::of_bytes(&b);
    if got != d.digest || b.len() as u64 != d.size {
        return Err(Error::usage(format!(
            "blob {} does not match its descriptor (sha256 {got}, {} bytes; expected {} bytes)",
            d.digest,
            b.len(),
            d.size
        )));
    }
    Ok(b)
}

fn name_of(d: &Descriptor) -> Option<String> {
    if let Some(n) = d.annotations.get("io.containerd.image.name") {
        return Some(n.clone());
    }
    // ref.name is often a bare tag (skopeo's `oci-archive:f.tar:TAG`): only a full name counts.
    d.annotations
        .get("org.opencontainers.image.ref.name")
        .filter(|n| n.contains(':') || n.contains('/'))
        .cloned()
}

pub fn candidates(outer: &Outer) -> Result<Vec<Candidate>> {
    let index: Index = serde_json::from_slice(&outer.read("index.json")?)
        .map_err(|e| Error::usage(format!("index.json: {e}")))?;
    let mut out = Vec::new();
    let mut todo: Vec<(Descriptor, Option<String>)> = index
        .manifests
        .into_iter()
        .map(|d| {
            let n = name_of(&d);
            (d, n)
        })
        .collect();
    let mut depth = 0;
    while let Some((d, name)) = todo.pop() {
        if d.media_type.contains("index") || d.media_type.contains("manifest.list") {
            depth += 1;
            if depth > 4 {
                return Err(Error::usage("index.json: indexes nested too deep"));
            }
            let idx: Index = serde_json::from_slice(&read_blob(outer, &d)?)
                .map_err(|e| Error::usage(format!("index {}: {e}", d.digest)))?;
            // A multi-platform index: the first linux/amd64-or-unspecified manifest is ours.
            todo.extend(idx.manifests.into_iter().take(1).map(|m| (m, name.clone())));
            continue;
        }
        let m: Manifest = serde_json::from_slice(&read_blob(outer, &d)?)
            .map_err(|e| Error::usage(format!("manifest {}: {e}", d.digest)))?;
        let layers = m
            .layers
            .iter()
            .map(|l| {
                if l.media_type.contains("zstd") {
                    return Err(Error::usage(format!(
                        "layer {}: zstd layers are not supported",
                        l.digest
                    )));
                }
                Ok(LayerRef {
                    member: member(l)?,
                    digest: Some(l.digest.clone()),
                    size: Some(l.size),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.push(Candidate {
            config: member(&m.config)?,
            config_digest: Some(m.config.digest.clone()),
            tags: name.into_iter().collect(),
            layers,
        });
    }
    if out.is_empty() {
        return Err(Error::usage("index.json lists no image"));
    }
    Ok(out)
}
