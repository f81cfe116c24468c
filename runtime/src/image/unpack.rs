//! One layer tar (plain or gzip) → one directory of the store, hashing the uncompressed stream
//! as it goes (the diff_id, checked by the caller before the directory is used):
//!
//! ```text
//! blob bytes ─▶ gzip? ─▶ HashingReader (diff_id) ─▶ tar entries ─▶ <staging>/fs/...
//! ```
//!
//! Hostile entries are refused, never followed: `..` components and absolute paths, an entry
//! whose parent is a symlink (it would write wherever the link points), a hard link to a name the
//! layer does not have, device nodes, and sparse files that claim more than [`MAX_SPARSE`].
//! Symlinks are created as they are (their targets are resolved in the container's root, never
//! here). Setuid bits are kept: the store is 0700, so they matter only inside a container.
//!
//! Metadata, as `tar -x --xattrs` as root restores it: owner, mode, mtime, and the xattrs of
//! PAX `SCHILY.xattr.*` records that xattr.rs keeps (set after chown, which clears
//! `security.capability`; an overlayfs xattr refuses the layer). Whiteouts get their entry's
//! owner and mtime. Directory mtimes are set after the last entry, since writing entries into
//! a directory changes its mtime.

use super::digest::HashingReader;
use super::whiteout::{self, Name};
use crate::error::{Error, Result};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// A sparse file may claim at most this logical size (a tar of a few bytes can claim 10 GB).
pub const MAX_SPARSE: u64 = 1 << 30;

/// What unpacking a layer found.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar, for a compressed layer; `None` for a plain one, whose
    /// diff_id is the digest of the bytes the caller fed in (hashed once, by the caller).
    pub diff_id: Option<String>,
    /// Bytes of regular files written.
    pub size: u64,
}

fn bad(msg: String) -> Error {
    Error::usage(msg)
}

/// An archive path made relative and checked: no `..`, not absolute. `None` for the root itself.
pub fn clean_rel(p: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(bad(format!(
                    "layer entry {}: '..' components are refused",
                    p.display()
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad(format!(
                    "layer entry {}: absolute paths are refused",
                    p.display()
                )));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Unpacks the layer read from `raw` into `dest` (which exists and is empty).
pub fn unpack_layer(raw: impl Read, dest: &Path) -> Result<Unpacked> {
    let mut buf = BufReader::with_capacity(1 << 20, raw);
    let head = buf.fill_buf().map_err(|e| Error::io("read layer", e))?;
    let (decoded, gzip): (Box<dyn Read>, bool) = match head {
        [0x1f, 0x8b, ..] => (Box::new(flate2::bufread::MultiGzDecoder::new(buf)), true),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            return Err(bad(
                "zstd-compressed layers are not supported (use gzip or none)".into(),
            ));
        }
        _ => (Box::new(buf), false),
    };
    let mut hashed = Tee {
        inner: decoded,
        hash: gzip.then(HashingReader::hasher),
    };
    let mut layer = Layer {
        root: dest,
        dirs: HashSet::new(),
        dir_times: Vec::new(),
        size: 0,
        buf: vec![0; 1 << 18],
    };
    {
        let mut ar = tar::Archive::new(&mut hashed);
        let entries = ar.entries().map_err(|e| Error::io("read layer tar", e))?;
        for e in entries {
            let mut e = e.map_err(|e| Error::io("read layer tar (truncated or corrupt?)", e))?;
            layer.entry(&mut e)?;
        }
    }
    // In entry order: a directory listed twice keeps its last entry's mtime.
    for (abs, mtime) in &layer.dir_times {
        set_mtime(abs, *mtime);
    }
    // The tar may end before its padding: what is left belongs to the digest too.
    std::io::copy(&mut hashed, &mut std::io::sink())
        .map_err(|e| Error::io("read layer (truncated or corrupt?)", e))?;
    Ok(Unpacked {
        diff_id: hashed.hash.map(HashingReader::hex),
        size: layer.size,
    })
}

/// The decompressed stream, hashed only when it differs from the raw bytes.
struct Tee<R> {
    inner: R,
    hash: Option<sha2::Sha256>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hash {
            sha2::Digest::update(h, &buf[..n]);
        }
        Ok(n)
    }
}

struct Layer<'a> {
    root: &'a Path,
    /// Relative paths known to be real directories (not symlinks) in this layer.
    dirs: HashSet<PathBuf>,
    /// Directories' mtimes, set once every entry is written.
    dir_times: Vec<(PathBuf, u64)>,
    size: u64,
    buf: Vec<u8>,
}

impl Layer<'_> {
    /// Creates missing parents; refuses a parent that is a symlink or not a directory.
    fn parents(&mut self, rel: &Path, create: bool) -> Result<()> {
        let mut cur = PathBuf::new();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for c in parent.components() {
            cur.push(c);
            if self.dirs.contains(&cur) {
                continue;
            }
            let abs = self.root.join(&cur);
            match std::fs::symlink_metadata(&abs) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(bad(format!(
                        "layer entry {}: its parent {} is a symlink; writing through it is refused",
                        rel.display(),
                        cur.display()
                    )));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(bad(format!(
                        "layer entry {}: its parent {} is not a directory",
                        rel.display(),
                        cur.display()
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    std::fs::create_dir(&abs)
                        .map_err(|e| Error::io(format!("create {}", abs.display()), e))?;
                }
                Err(e) => return Err(Error::io(format!("layer entry {}", rel.display()), e)),
            }
            self.dirs.insert(cur.clone());
        }
        Ok(())
    }

    /// Removes what is at `rel` (an earlier entry of the same name), unless it is a directory
    /// and `keep_dir`.
    fn clear(&mut self, rel: &Path, keep_dir: bool) -> Result<bool> {
        let abs = self.root.join(rel);
        let r = match std::fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() && keep_dir => return Ok(true),
            Ok(m) if m.is_dir() => {
                self.dirs.retain(|d| !d.starts_with(rel));
                self.dir_times.retain(|(d, _)| !d.starts_with(&abs));
                std::fs::remove_dir_all(&abs)
            }
            Ok(_) => std::fs::remove_file(&abs),
            Err(_) => return Ok(false),
        };
        r.map_err(|e| Error::io(format!("replace {}", abs.display()), e))?;
        Ok(false)
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<R>) -> Result<()> {
        let raw_path = e
            .path()
            .map_err(|x| Error::io("layer entry name", x))?
            .into_owned();
        let Some(rel) = clean_rel(&raw_path)? else {
            return Ok(()); // "./" itself: the layer root keeps its 0755
        };
        self.parents(&rel, true)?;
        let file_name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        match whiteout::classify(file_name) {
            Name::Plain => {}
            Name::Meta => return Ok(()),
            Name::Opaque => {
                let dir = self.root.join(rel.parent().unwrap_or(Path::new("")));
                return whiteout::set_opaque(&dir)
                    .map_err(|x| Error::io(format!("mark {} opaque", dir.display()), x));
            }
            Name::Whiteout(n) => {
                let target = rel.with_file_name(n);
                self.clear(&target, false)?;
                let abs = self.root.join(&target);
                whiteout::make_whiteout(&abs)
                    .map_err(|x| Error::io(format!("whiteout {}", abs.display()), x))?;
                // Owner and mtime as the entry says: pack.rs writes them back, byte-stable.
                let h = e.header();
                self.metadata(&abs, h, None, &[])?;
                set_mtime(&abs, h.mtime().unwrap_or(0));
                return Ok(());
            }
        }
        let xattrs = super::xattr::from_pax(e, &rel)?;
        let abs = self.root.join(&rel);
        let h = e.header().clone();
        let kind = h.entry_type();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let io = |what: &str| {
            let p = abs.display().to_string();
            let what = what.to_string();
            move |x: std::io::Error| Error::io(format!("{what} {p}"), x)
        };
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                if !self.clear(&rel, true)? {
                    std::fs::create_dir(&abs).map_err(io("create"))?;
                }
                self.dirs.insert(rel.clone());
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                if kind.is_gnu_sparse() && e.size() > MAX_SPARSE {
                    return Err(bad(format!(
                        "layer entry {}: a sparse file claiming {} bytes is refused (limit {MAX_SPARSE})",
                        rel.display(),
                        e.size()
                    )));
                }
                self.clear(&rel, false)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&abs)
                    .map_err(io("create"))?;
                loop {
                    let n = e.read(&mut self.buf).map_err(io("read layer data for"))?;
                    if n == 0 {
                        break;
                    }
                    f.write_all(&self.buf[..n]).map_err(io("write"))?;
                    self.size += n as u64;
                }
            }
            T::Symlink => {
                let target = e
                    .link_name()
                    .map_err(io("link target of"))?
                    .ok_or_else(|| {
                        bad(format!(
                            "layer entry {}: symlink without a target",
                            rel.display()
                        ))
                    })?
                    .into_owned();
                self.clear(&rel, false)?;
                std::os::unix::fs::symlink(&target, &abs).map_err(io("symlink"))?;
            }
            T::Link => {
                let target = e
                    .link_name()
                    .map_err(io("link target of"))?
                    .ok_or_else(|| {
                        bad(format!(
                            "layer entry {}: hard link without a target",
                            rel.display()
                        ))
                    })?
                    .into_owned();
                // Hard link targets name an earlier entry of this archive: a path in the layer.
                let t = clean_rel(&target)?.ok_or_else(|| {
                    bad(format!(
                        "layer entry {}: hard link to the layer root",
                        rel.display()
                    ))
                })?;
                self.parents(&t, false).map_err(|_| {
                    bad(format!(
                        "layer entry {}: hard link to {} which is not in the layer",
                        rel.display(),
                        target.display()
                    ))
                })?;
                let tabs = self.root.join(&t);
                match std::fs::symlink_metadata(&tabs) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(bad(format!(
                            "layer entry {}: hard link to {} which is not a file of the layer",
                            rel.display(),
                            target.display()
                        )));
                    }
                }
                if t != rel {
                    self.clear(&rel, false)?;
                    std::fs::hard_link(&tabs, &abs).map_err(io("hard link"))?;
                }
                return Ok(()); // the target's metadata is the link's
            }
            T::Fifo => {
                self.clear(&rel, false)?;
                nix::unistd::mkfifo(&abs, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|x| io("mkfifo")(x.into()))?;
            }
            T::Char | T::Block => {
                return Err(bad(format!(
                    "layer entry {}: device nodes are refused (containers get their own /dev)",
                    rel.display()
                )));
            }
            other => {
                tracing::debug!(entry = %rel.display(), kind = ?other, "layer entry skipped");
                return Ok(());
            }
        }
        let symlink = kind == T::Symlink;
        self.metadata(&abs, &h, (!symlink).then_some(mode), &xattrs)?;
        let mtime = h.mtime().unwrap_or(0);
        if kind == T::Directory {
            self.dir_times.push((abs, mtime));
        } else {
            set_mtime(&abs, mtime);
        }
        Ok(())
    }

    /// Owner, then mode (setuid included) and xattrs (file capabilities included): chown
    /// clears both. `mode`: `None` for a symlink (its mode is not its own) and a whiteout.
    fn metadata(
        &self,
        abs: &Path,
        h: &tar::Header,
        mode: Option<u32>,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let uid = h
            .uid()
            .ok()
            .and_then(|u| u32::try_from(u).ok())
            .unwrap_or(0);
        let gid = h
            .gid()
            .ok()
            .and_then(|g| u32::try_from(g).ok())
            .unwrap_or(0);
        let io = |what: &'static str| {
            let p = abs.display().to_string();
            move |x: std::io::Error| Error::io(format!("{what} {p}"), x)
        };
        std::os::unix::fs::lchown(abs, Some(uid), Some(gid)).map_err(io("chown"))?;
        if let Some(mode) = mode {
            std::fs::set_permissions(abs, std::fs::Permissions::from_mode(mode))
                .map_err(io("chmod"))?;
        }
        for (name, value) in xattrs {
            match super::xattr::set(abs, name, value) {
                Ok(()) => {}
                // Linux allows user.* only on files and directories; a symlink's is dropped.
                Err(e) if mode.is_none() && e.raw_os_error() == Some(libc::EPERM) => {
                    tracing::debug!(path = %abs.display(), xattr = %name, "symlink xattr dropped");
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("set xattr {name} on {}", abs.display()),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Sets `abs`'s mtime (and atime) to `mtime` seconds, not following a symlink.
fn set_mtime(abs: &Path, mtime: u64) {
    let t = nix::sys::time::TimeSpec::new(mtime.min(i64::MAX as u64) as i64, 0);
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        abs,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}
