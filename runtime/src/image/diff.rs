//! `tether diff`: a container's upper dir against its image's layers, as `docker diff` prints it:
//!
//! ```text
//! upper/x  whiteout (char 0:0)         → D /x
//! upper/d  opaque dir                  → C /d, and D for what the layers had in d and upper lacks
//! upper/y  in a lower layer too        → C /y   (directories on the path of a change are C)
//! upper/z  in no lower layer           → A /z   (and A for everything below it, as Docker lists)
//! ```

use super::whiteout;
use std::path::{Path, PathBuf};

/// (kind, path) lines, sorted by path.
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> std::io::Result<Vec<(char, String)>> {
    let mut out = Vec::new();
    walk(upper, Path::new(""), lowers, &mut out)?;
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// `rel` exists in the lower layers (top first), honouring their whiteouts and opaque dirs.
fn in_lower(rel: &Path, lowers: &[PathBuf]) -> bool {
    let comps: Vec<_> = rel.components().collect();
    for l in lowers {
        let mut cur = l.clone();
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                // Not in this layer: the layers below decide.
                Err(_) => break,
                Ok(m) if whiteout::is_whiteout(&m) => return false,
                Ok(_) if i + 1 == comps.len() => return true,
                // A file here hides any directory of that name below.
                Ok(m) if !m.is_dir() => return false,
                // Below an opaque directory only this layer counts.
                Ok(_) if whiteout::is_opaque(&cur) => {
                    return std::fs::symlink_metadata(l.join(rel))
                        .is_ok_and(|m| !whiteout::is_whiteout(&m));
                }
                Ok(_) => {}
            }
        }
    }
    false
}

fn lower_names(rel: &Path, lowers: &[PathBuf]) -> Vec<std::ffi::OsString> {
    let mut v = Vec::new();
    for l in lowers {
        if let Ok(rd) = std::fs::read_dir(l.join(rel)) {
            v.extend(rd.flatten().map(|e| e.file_name()));
        }
    }
    v.sort();
    v.dedup();
    v
}

/// What tether's own setup leaves in every upper dir: the mount points of /proc, /sys, /dev and
/// of the bound /etc files, made empty. They are not the container's changes (Docker hides its
/// own the same way), so diff and commit skip them.
pub fn skipped(upper: &Path, rel: &Path, m: &std::fs::Metadata) -> bool {
    const DIRS: [&str; 3] = ["proc", "sys", "dev"];
    const FILES: [&str; 3] = ["etc/hosts", "etc/hostname", "etc/resolv.conf"];
    let s = rel.to_string_lossy();
    let empty_dir = || std::fs::read_dir(upper.join(rel)).is_ok_and(|mut d| d.next().is_none());
    (m.is_dir() && DIRS.contains(&s.as_ref()) && empty_dir())
        || (m.is_file() && m.len() == 0 && FILES.contains(&s.as_ref()))
}

/// A directory of the upper dir that holds only [`skipped`] entries (and is not opaque).
pub fn only_skipped(upper: &Path, rel: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(upper.join(rel)) else {
        return false;
    };
    let mut any = false;
    for e in rd.flatten() {
        let r = rel.join(e.file_name());
        match std::fs::symlink_metadata(upper.join(&r)) {
            Ok(m) if skipped(upper, &r, &m) => any = true,
            _ => return false,
        }
    }
    any && !whiteout::is_opaque(&upper.join(rel))
}

fn walk(
    upper: &Path,
    rel: &Path,
    lowers: &[PathBuf],
    out: &mut Vec<(char, String)>,
) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(upper.join(rel))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let r = rel.join(&n);
        let shown = format!("/{}", r.display());
        let m = std::fs::symlink_metadata(upper.join(&r))?;
        if skipped(upper, &r, &m) {
            continue;
        }
        if whiteout::is_whiteout(&m) {
            if in_lower(&r, lowers) {
                out.push(('D', shown));
            }
            continue;
        }
        let existed = in_lower(&r, lowers);
        // A directory copied up only for tether's mount points (/etc) is no change either.
        if m.is_dir() && existed && only_skipped(upper, &r) {
            continue;
        }
        out.push((if existed { 'C' } else { 'A' }, shown));
        if m.is_dir() {
            if existed && whiteout::is_opaque(&upper.join(&r)) {
                for ln in lower_names(&r, lowers) {
                    let lr = r.join(&ln);
                    if std::fs::symlink_metadata(upper.join(&lr)).is_err() && in_lower(&lr, lowers)
                    {
                        out.push(('D', format!("/{}", lr.display())));
                    }
                }
            }
            walk(upper, &r, lowers, out)?;
        }
    }
    Ok(())
}
