//! A directory with overlayfs whiteouts (a stored layer, or a container's upper dir) → a layer
//! tar with OCI whiteouts, the reverse of unpack.rs. Entries are sorted, so the same tree gives
//! the same bytes (and diff_id). Hard links inside the tree stay hard links.
//!
//! ```text
//! NAME (char 0:0)          → .wh.NAME  (empty file)
//! DIR (opaque xattr)       → DIR/ and DIR/.wh..wh..opq
//! file, dir, symlink, fifo → as they are (owner, mode incl. setuid, mtime), and the xattrs
//!                            xattr.rs keeps as PAX SCHILY.xattr.* records, sorted by name
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

/// The PAX record of `p`'s kept xattrs, ahead of its entry (none: no record).
fn xattrs<W: Write>(b: &mut tar::Builder<W>, p: &Path) -> Result<()> {
    let x =
        super::xattr::kept(p).map_err(|e| Error::io(format!("xattrs of {}", p.display()), e))?;
    if x.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = x
        .iter()
        .map(|(n, _)| format!("{}{n}", super::xattr::PAX_PREFIX))
        .collect();
    b.append_pax_extensions(
        keys.iter()
            .map(String::as_str)
            .zip(x.iter().map(|(_, v)| &v[..])),
    )
    .map_err(|e| Error::io(format!("tar xattrs of {}", p.display()), e))
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
            xattrs(b, &p)?;
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
            xattrs(b, &p)?;
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
            xattrs(b, &p)?;
            let mut h = header_for(&m, tar::EntryType::Regular);
            let f = std::fs::File::open(&p).map_err(io("open", &p))?;
            b.append_data(&mut h, &r, f).map_err(io("tar", &r))?;
        } else if ft.is_fifo() {
            xattrs(b, &p)?;
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

    /// A header for `name` of `size` bytes: a directory when the name ends with '/'.
    fn header(name: &str, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if name.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(mode);
        h.set_size(size);
        h
    }

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mode = if name.ends_with('/') { 0o755 } else { 0o644 };
            let mut h = header(name, mode, data.len() as u64);
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

    /// `cap_net_raw+ep`, as `setcap` writes it (VFS_CAP_REVISION_2).
    const CAP_NET_RAW: [u8; 20] = [
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn entry(b: &mut tar::Builder<Vec<u8>>, name: &str, mtime: u64, pax: &[(&str, &[u8])]) {
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().copied()).unwrap();
        }
        let mut h = header(name, 0o755, 0);
        h.set_mtime(mtime);
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    }

    fn xattr_names(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for e in tar::Archive::new(tar_bytes).entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            if let Some(x) = e.pax_extensions().unwrap() {
                for x in x {
                    let x = x.unwrap();
                    out.push((
                        format!("{p} {}", x.key().unwrap()),
                        x.value_bytes().to_vec(),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn pax_xattrs_are_applied_packed_again_and_a_directory_keeps_its_mtime() {
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "bin/", 1_500_000_000, &[]);
        entry(
            &mut b,
            "bin/ping",
            1_600_000_000,
            &[("SCHILY.xattr.security.capability", &CAP_NET_RAW)],
        );
        entry(&mut b, "bin/.wh.gone", 1_600_000_000, &[]);
        entry(
            &mut b,
            "u",
            1_600_000_000,
            &[
                ("SCHILY.xattr.user.note", b"hi"),
                ("SCHILY.xattr.security.selinux", b"system_u:object_r:bin_t"),
            ],
        );
        let t = b.into_inner().unwrap();
        let d = tempfile::tempdir().unwrap();
        crate::image::unpack::unpack_layer(t.as_slice(), d.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        let bin = std::fs::metadata(d.path().join("bin")).unwrap();
        assert_eq!(bin.mtime(), 1_500_000_000, "set after bin/'s entries");
        let got = |p: &str| crate::image::xattr::kept(&d.path().join(p)).unwrap();
        assert_eq!(
            got("bin/ping"),
            [("security.capability".to_string(), CAP_NET_RAW.to_vec())]
        );
        assert_eq!(got("u"), [("user.note".to_string(), b"hi".to_vec())]);

        let mut a = Vec::new();
        pack_dir(d.path(), &mut a, false).unwrap();
        assert_eq!(
            xattr_names(&a),
            [
                (
                    "bin/ping SCHILY.xattr.security.capability".to_string(),
                    CAP_NET_RAW.to_vec()
                ),
                ("u SCHILY.xattr.user.note".to_string(), b"hi".to_vec()),
            ],
            "kept names only"
        );
        // The packed tree unpacks to a tree that packs to the same bytes.
        let d2 = tempfile::tempdir().unwrap();
        crate::image::unpack::unpack_layer(a.as_slice(), d2.path()).unwrap();
        let mut a2 = Vec::new();
        pack_dir(d2.path(), &mut a2, false).unwrap();
        assert!(a == a2, "unpack ∘ pack is a fixed point");
    }

    #[test]
    fn an_overlay_xattr_in_a_layer_is_refused() {
        for name in [
            "trusted.overlay.opaque",
            "trusted.overlay.redirect",
            "user.overlay.opaque",
        ] {
            let mut b = tar::Builder::new(Vec::new());
            let key = format!("SCHILY.xattr.{name}");
            entry(&mut b, "d/", 1, &[(key.as_str(), b"y")]);
            let t = b.into_inner().unwrap();
            let d = tempfile::tempdir().unwrap();
            let e = crate::image::unpack::unpack_layer(t.as_slice(), d.path())
                .unwrap_err()
                .to_string();
            assert!(e.contains(name) && e.contains("refused"), "{e}");
            assert!(!whiteout::is_opaque(&d.path().join("d")));
        }
    }
}
