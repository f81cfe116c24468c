//! Extended attributes of layer entries: PAX `SCHILY.xattr.NAME` records in a layer tar ⇄ the
//! file's xattrs on disk. Which names cross, in both directions (unpack and pack):
//!
//! ```text
//! user.*                                  kept (applications' own metadata)
//! security.capability                     kept (file capabilities: /bin/ping's cap_net_raw)
//! system.posix_acl_access, …_default      kept (ACLs, as GNU tar --xattrs --acls stores them)
//! trusted.overlay.*, user.overlay.*       REFUSED on unpack: overlayfs reads them as whiteouts,
//!                                         opaque dirs, redirects; only OCI whiteouts may say that
//! anything else (security.selinux,        skipped (the host's policy labels, not image content)
//!   other trusted.*, security.ima, …)
//! ```
//! On pack the overlay names are never read as xattrs: whiteout.rs turns the opaque one into
//! `.wh..wh..opq`, and overlayfs' own bookkeeping in an upper dir (origin, impure) stays out.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The PAX record prefix GNU tar, bsdtar, Docker and Podman write xattrs under.
pub const PAX_PREFIX: &str = "SCHILY.xattr.";

/// What a layer may say about one xattr name.
#[derive(Debug, PartialEq, Eq)]
pub enum Rule {
    Keep,
    Skip,
    /// overlayfs metadata: it would forge whiteouts and redirects.
    Refuse,
}

pub fn rule(name: &str) -> Rule {
    if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
        Rule::Refuse
    } else if name.starts_with("user.")
        || name == "security.capability"
        || name == "system.posix_acl_access"
        || name == "system.posix_acl_default"
    {
        Rule::Keep
    } else {
        Rule::Skip
    }
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
}

fn cname(n: &str) -> std::io::Result<CString> {
    CString::new(n)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in xattr name"))
}

/// Sets `name` on `p` itself (not a symlink's target).
pub fn set(p: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let (p, n) = (cpath(p)?, cname(name)?);
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The kept xattrs of `p` (per [`rule`]), sorted by name, so a tree packs to the same bytes.
pub fn kept(p: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let c = cpath(p)?;
    let mut names = vec![0u8; 4096];
    let n = loop {
        // SAFETY: a valid C string and a buffer of the given length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for raw in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if rule(name) != Rule::Keep {
            continue;
        }
        let cn = cname(name)?;
        let mut v = vec![0u8; 256];
        loop {
            // SAFETY: valid C strings and a buffer of the given length.
            let m =
                unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            if m >= 0 {
                v.truncate(m as usize);
                break;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => v.resize(v.len() * 16, 0),
                _ => return Err(e),
            }
        }
        out.push((name.to_string(), v));
    }
    out.sort();
    Ok(out)
}

/// The xattrs a layer entry's PAX records carry, checked against [`rule`]: `Err` for a refused
/// name, skipped names left out.
pub fn from_pax<R: std::io::Read>(
    e: &mut tar::Entry<R>,
    entry: &Path,
) -> Result<Vec<(String, Vec<u8>)>> {
    let Some(pax) = e
        .pax_extensions()
        .map_err(|x| Error::io("layer entry PAX records", x))?
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for ext in pax {
        let ext = ext.map_err(|x| Error::io("layer entry PAX records", x))?;
        let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix(PAX_PREFIX)) else {
            continue;
        };
        match rule(name) {
            Rule::Keep => out.push((name.to_string(), ext.value_bytes().to_vec())),
            Rule::Skip => {
                tracing::debug!(entry = %entry.display(), xattr = name, "layer xattr skipped");
            }
            Rule::Refuse => {
                return Err(Error::usage(format!(
                    "layer entry {}: xattr {name} is refused (overlayfs metadata; a layer says \
                     what it deletes only with .wh. whiteouts)",
                    entry.display()
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_xattrs_are_refused_capabilities_and_user_xattrs_kept_labels_skipped() {
        assert_eq!(rule("trusted.overlay.opaque"), Rule::Refuse);
        assert_eq!(rule("trusted.overlay.redirect"), Rule::Refuse);
        assert_eq!(rule("user.overlay.whiteout"), Rule::Refuse);
        assert_eq!(rule("security.capability"), Rule::Keep);
        assert_eq!(rule("user.mime_type"), Rule::Keep);
        assert_eq!(rule("system.posix_acl_access"), Rule::Keep);
        assert_eq!(rule("security.selinux"), Rule::Skip);
        assert_eq!(rule("trusted.md5"), Rule::Skip);
    }
}
