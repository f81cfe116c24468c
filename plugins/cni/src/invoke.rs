//! Executing a plugin binary: used by plugins for IPAM delegation and by the runtime for conflists.

use crate::error::{Error, ErrorCode};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Finds `CNI_PATH/<type>`. The type must be a plain file name; the error names the binary and every
/// directory searched.
pub fn find_plugin(plugin_type: &str, paths: &[PathBuf]) -> Result<PathBuf, Error> {
    if plugin_type.is_empty()
        || plugin_type.contains('/')
        || plugin_type == "."
        || plugin_type == ".."
    {
        return Err(Error::invalid_config(format!(
            "invalid plugin type {plugin_type:?}: it must be a binary name"
        )));
    }
    for dir in paths {
        let p = dir.join(plugin_type);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    let searched: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Err(Error::new(
        ErrorCode::InvalidEnvironment,
        format!(
            "failed to find plugin {plugin_type:?} in path [{}]",
            searched.join(":")
        ),
    ))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs one plugin: `env` is the complete CNI environment (PATH is inherited), `stdin` the config.
/// Returns the parsed stdout (None when empty). A non-zero exit becomes the plugin's own error JSON
/// if it printed one, else an internal error carrying its stderr.
pub fn exec_plugin(
    binary: &Path,
    env: &[(&str, String)],
    stdin: &[u8],
) -> Result<Option<Value>, Error> {
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // TETHER_OVERLAY_DIR moves the overlay agent's state (tests, odd hosts): the overlay plugin
    // must see the directory the agent writes to, whoever runs it.
    for k in [
        "PATH",
        "TETHER_LOG",
        "TETHER_LOG_FILE",
        "RUST_LOG",
        "TETHER_OVERLAY_DIR",
    ] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::new(
            ErrorCode::IoFailure,
            format!("failed to run plugin {}: {e}", binary.display()),
        )
    })?;
    {
        let mut si = child.stdin.take().expect("piped stdin");
        // A plugin may exit without reading stdin (VERSION); a broken pipe is not an error then.
        let _ = si.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| {
        Error::new(
            ErrorCode::IoFailure,
            format!("failed to wait for plugin {}: {e}", binary.display()),
        )
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        tracing::debug!(plugin = %binary.display(), stderr = %stderr.trim(), "plugin stderr");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if let Ok(e) = serde_json::from_str::<Error>(stdout.trim()) {
            return Err(e);
        }
        return Err(Error::internal(format!(
            "plugin {} failed ({}): {}{}",
            binary.display(),
            out.status,
            stdout.trim(),
            stderr.trim()
        )));
    }
    if stdout.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(stdout.trim()).map(Some).map_err(|e| {
        Error::new(
            ErrorCode::DecodingFailure,
            format!(
                "plugin {} printed invalid JSON: {e}: {stdout}",
                binary.display()
            ),
        )
    })
}
