//! The outer archive (docker-archive or OCI layout tar) indexed without copying it: each
//! member's name, offset and size, so a layer is read straight from the archive file.
//!
//! ```text
//! archive.tar ──entries_with_seek──▶ { "manifest.json" → (offset, size), "<hex>.tar" → … }
//!                                     symlinks (old `docker save`) resolve to their targets
//! ```

use crate::error::{Error, Result};
use crate::image::unpack::clean_rel;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The largest JSON member (manifest, index, config) read into memory.
const MAX_JSON: u64 = 16 << 20;

pub struct Outer {
    file: File,
    path: PathBuf,
    members: HashMap<String, (u64, u64)>,
    links: HashMap<String, String>,
}

fn key(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Outer {
    pub fn index(path: &Path) -> Result<Outer> {
        let f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        let mut ar = tar::Archive::new(&f);
        let bad = |e: std::io::Error| {
            Error::usage(format!(
                "{}: not a readable tar archive: {e}",
                path.display()
            ))
        };
        for e in ar.entries_with_seek().map_err(bad)? {
            let e = e.map_err(bad)?;
            let name = e.path().map_err(bad)?.into_owned();
            let Some(rel) = clean_rel(&name)? else {
                continue;
            };
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    members.insert(key(&rel), (e.raw_file_position(), e.size()));
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let t = e.link_name().map_err(bad)?.unwrap_or_default().into_owned();
                    let joined = match e.header().entry_type() {
                        // A symlink's target is relative to its directory.
                        tar::EntryType::Symlink => rel.parent().unwrap_or(Path::new("")).join(&t),
                        _ => t,
                    };
                    let mut out = PathBuf::new();
                    for c in joined.components() {
                        match c {
                            std::path::Component::Normal(n) => out.push(n),
                            std::path::Component::ParentDir if out.pop() => {}
                            std::path::Component::CurDir => {}
                            _ => {
                                return Err(Error::usage(format!(
                                    "{}: member {} links outside the archive",
                                    path.display(),
                                    rel.display()
                                )));
                            }
                        }
                    }
                    links.insert(key(&rel), key(&out));
                }
                _ => {}
            }
        }
        // Position checks happen on use; a seek past the end reads nothing and fails the digest.
        Ok(Outer {
            file: f,
            path: path.to_path_buf(),
            members,
            links,
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.locate(name).is_some()
    }

    fn locate(&self, name: &str) -> Option<(u64, u64)> {
        let mut n = name.trim_start_matches("./").to_string();
        for _ in 0..8 {
            if let Some(m) = self.members.get(&n) {
                return Some(*m);
            }
            n = self.links.get(&n)?.clone();
        }
        None
    }

    /// A reader of the member's bytes.
    pub fn open(&self, name: &str) -> Result<(impl Read + use<>, u64)> {
        let (off, size) = self.locate(name).ok_or_else(|| {
            Error::usage(format!(
                "{}: the manifest names {name}, which the archive does not contain",
                self.path.display()
            ))
        })?;
        let mut f = self
            .file
            .try_clone()
            .map_err(|e| Error::io("dup archive fd", e))?;
        f.seek(SeekFrom::Start(off))
            .map_err(|e| Error::io(format!("seek in {}", self.path.display()), e))?;
        Ok((f.take(size), size))
    }

    /// A small member (JSON) read whole.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let (mut r, size) = self.open(name)?;
        if size > MAX_JSON {
            return Err(Error::usage(format!(
                "{}: {name} is {size} bytes, too large for a manifest or config",
                self.path.display()
            )));
        }
        let mut v = Vec::with_capacity(size as usize);
        r.read_to_end(&mut v)
            .map_err(|e| Error::io(format!("read {name} from {}", self.path.display()), e))?;
        if v.len() as u64 != size {
            return Err(Error::usage(format!(
                "{}: {name} is truncated",
                self.path.display()
            )));
        }
        Ok(v)
    }
}
