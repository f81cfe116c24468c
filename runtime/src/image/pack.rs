//! A directory with overlayfs whiteouts (a stored layer, or a container's upper dir) → a layer
//! tar with OCI whiteouts, the reverse of unpack.rs. Entries are sorted, so the same tree gives
//! the same bytes (and diff_id). Hard links inside the tree stay hard links.
//!
//! ```text
//! NAME (char 0:0)          → .wh.NAME  (empty file)
//! DIR (opaque xattr)       → DIR/ and DIR/.wh..wh..opq
//! file, dir, symlink, fifo → as they are (owner, mode incl. setuid, mtime)
//! ```

use super::digest::HashingWriter;
use super::whiteout;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Writes the tar of `dir` to `out`; returns (diff_id, bytes). `upper`: a container's upper
/// dir, whose mount points tether made are left out (diff.rs's `skipped`).
pub fn pack_dir<W: Write>(dir: &Path, out: W, upper: bool) -> Result<(String, u64)> {
    let mut b = tar::Builder::new(HashingWriter::new(out));
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk(dir, Path::new(""), &mut b, &mut links, upper)?;
    let w = b
        .into_inner()
        .map_err(|e| Error::io("finish layer tar", e))?;
    let mut w = w;
    w.flush().map_err(|e| Error::io("flush layer tar", e))?;
    Ok((w.digest(), w.count))
}

fn header_for(m: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(m, tar::HeaderMode::Complete);
    h.set_entry_type(kind);
    h.set_mode(m.mode() & 0o7777);
    if kind != tar::EntryType::Regular {
        h.set_size(0);
    }
    h
}

fn walk<W: Write>(
    root: &Path,
    rel: &Path,
    b: &mut tar::Builder<W>,
    links: &mut HashMap<(u64, u64), PathBuf>,
    upper: bool,
) -> Result<()> {
    let abs = root.join(rel);
    let io = |what: &str, p: &Path| {
        let s = format!("{what} {}", p.display());
        move |e: std::io::Error| Error::io(s, e)
    };
    let mut names: Vec<_> = std::fs::read_dir(&abs)
        .map_err(io("read", &abs))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for n in names {
        let r = rel.join(&n);
        let p = root.join(&r);
        let m = std::fs::symlink_metadata(&p).map_err(io("stat", &p))?;
        let ft = m.file_type();
        if upper
            && (super::diff::skipped(root, &r, &m)
                || (ft.is_dir() && super::diff::only_skipped(root, &r)))
        {
            continue;
        }
        if whiteout::is_whiteout(&m) {
            let wh = rel.join(format!("{}{}", whiteout::PREFIX, n.to_string_lossy()));
            let mut h = header_for(&m, tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(0);
            b.append_data(&mut h, &wh, std::io::empty())
                .map_err(io("tar", &wh))?;
        } else if ft.is_dir() {
            let mut h = header_for(&m, tar::EntryType::Directory);
            b.append_data(&mut h, &r, std::io::empty())
                .map_err(io("tar", &r))?;
            if whiteout::is_opaque(&p) {
                let o = r.join(whiteout::OPAQUE);
                let mut h = header_for(&m, tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, &o, std::io::empty())
                    .map_err(io("tar", &o))?;
            }
            walk(root, &r, b, links, upper)?;
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&p).map_err(io("readlink", &p))?;
            let mut h = header_for(&m, tar::EntryType::Symlink);
            b.append_link(&mut h, &r, &t).map_err(io("tar", &r))?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    let mut h = header_for(&m, tar::EntryType::Link);
                    b.append_link(&mut h, &r, first).map_err(io("tar", &r))?;
                    continue;
                }
                links.insert((m.dev(), m.ino()), r.clone());
            }
            let mut h = header_for(&m, tar::EntryType::Regular);
            let f = std::fs::File::open(&p).map_err(io("open", &p))?;
            b.append_data(&mut h, &r, f).map_err(io("tar", &r))?;
        } else if ft.is_fifo() {
            let mut h = header_for(&m, tar::EntryType::Fifo);
            b.append_data(&mut h, &r, std::io::empty())
                .map_err(io("tar", &r))?;
        } else {
            tracing::warn!(path = %r.display(), "sockets and device nodes are not put in layers");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            let dir = name.ends_with('/');
            h.set_entry_type(if dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_mode(if dir { 0o755 } else { 0o644 });
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        tar::Archive::new(tar_bytes)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn oci_whiteouts_survive_unpack_and_pack_and_the_same_tree_packs_to_the_same_bytes() {
        let d = tempfile::tempdir().unwrap();
        let t = layer(&[
            ("d/", b""),
            ("d/.wh.gone", b""),
            ("o/", b""),
            ("o/.wh..wh..opq", b""),
            ("o/kept", b"k"),
        ]);
        let un = crate::image::unpack::unpack_layer(t.as_slice(), d.path()).unwrap();
        assert_eq!(
            un.diff_id, None,
            "a plain layer's diff_id is its raw digest"
        );
        let m = std::fs::symlink_metadata(d.path().join("d/gone")).unwrap();
        assert!(whiteout::is_whiteout(&m));
        assert!(whiteout::is_opaque(&d.path().join("o")));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (da, _) = pack_dir(d.path(), &mut a, false).unwrap();
        let (db, _) = pack_dir(d.path(), &mut b, false).unwrap();
        assert_eq!((da, &a), (db, &b));
        assert_eq!(
            names(&a),
            ["d", "d/.wh.gone", "o", "o/.wh..wh..opq", "o/kept"]
        );
    }
}
