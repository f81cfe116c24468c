//! Whole-file replacement, for every file tether rewrites (a container's record, a new network's
//! conflist, the plugin version cache).

use std::path::Path;

/// Replaces `path` with `bytes` in one step for readers: written to a temporary file beside it
/// (named after this process, so that concurrent writers never share one), then renamed over
/// it. A failed write or rename removes the temporary file.
pub fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let r = std::fs::write(&tmp, bytes).and_then(|()| {
        crate::hook::kill_point("write-tmp");
        std::fs::rename(&tmp, path)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}
