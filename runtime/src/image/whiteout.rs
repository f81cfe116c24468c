//! OCI whiteouts (in layer tars) ⇄ overlayfs whiteouts (on disk), in both directions:
//!
//! ```text
//! layer tar                       unpacked layer / container upper dir
//! dir/.wh.NAME         ⇄          dir/NAME   character device 0:0
//! dir/.wh..wh..opq     ⇄          dir/       xattr trusted.overlay.opaque = "y"
//! ```
//!
//! overlayfs reads exactly these when the directories are its lower and upper layers, so an
//! unpacked layer needs no further translation at mount time.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

pub const PREFIX: &str = ".wh.";
pub const OPAQUE: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What a tar entry's file name means.
#[derive(Debug, PartialEq, Eq)]
pub enum Name<'a> {
    Plain,
    /// `.wh.NAME`: NAME is deleted.
    Whiteout(&'a str),
    /// `.wh..wh..opq`: the directory hides what the layers below have in it.
    Opaque,
    /// Other `.wh..wh.` names (aufs bookkeeping): carry no meaning for overlayfs.
    Meta,
}

pub fn classify(file_name: &str) -> Name<'_> {
    if file_name == OPAQUE {
        Name::Opaque
    } else if file_name.starts_with(".wh..wh.") {
        Name::Meta
    } else if let Some(n) = file_name.strip_prefix(PREFIX) {
        if n.is_empty() || n == "." || n == ".." {
            Name::Meta
        } else {
            Name::Whiteout(n)
        }
    } else {
        Name::Plain
    }
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
}

/// Makes `p` an overlayfs whiteout (a 0:0 character device).
pub fn make_whiteout(p: &Path) -> std::io::Result<()> {
    nix::sys::stat::mknod(
        p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .map_err(std::io::Error::from)
}

pub fn is_whiteout(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    m.file_type().is_char_device() && m.rdev() == 0
}

pub fn set_opaque(dir: &Path) -> std::io::Result<()> {
    let p = cpath(dir)?;
    let name = CString::new(OPAQUE_XATTR).expect("no NUL");
    // SAFETY: valid C strings and a 1-byte value.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn is_opaque(dir: &Path) -> bool {
    let Ok(p) = cpath(dir) else { return false };
    let name = CString::new(OPAQUE_XATTR).expect("no NUL");
    let mut v = [0u8; 4];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    n == 1 && v[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names_are_told_apart() {
        assert_eq!(classify("a"), Name::Plain);
        assert_eq!(classify(".wh.a"), Name::Whiteout("a"));
        assert_eq!(classify(".wh..wh..opq"), Name::Opaque);
        assert_eq!(classify(".wh..wh.plnk"), Name::Meta);
        assert_eq!(classify(".wh.."), Name::Meta);
    }
}
