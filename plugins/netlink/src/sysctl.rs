//! `/proc/sys/net/...` knobs, optionally inside another network namespace.
//!
//! A `/proc/sys/net` file reflects the network namespace of the thread that opens it, so the
//! open happens on a thread that entered the target namespace.

use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use crate::error::{Error, Result, from_io};
use crate::ns::run_in;

/// Turns `net.ipv4.ip_forward` or `net/ipv4/ip_forward` into `/proc/sys/net/ipv4/ip_forward`.
///
/// A key with a `/` is taken literally, so interface names with dots (`net/ipv4/conf/eth0.1/...`)
/// work. The key becomes a path, so anything that could leave `/proc/sys/net` is rejected.
fn sysctl_path(key: &str) -> Result<PathBuf> {
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    let parts: Vec<&str> = rel.split('/').collect();
    let valid = parts.len() >= 2
        && parts[0] == "net"
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != ".." && !p.contains('\0'));
    if !valid {
        return Err(Error::Invalid(format!(
            "sysctl key {key:?}: must name a file under net/ (no '..', no absolute path)"
        )));
    }
    Ok(PathBuf::from("/proc/sys").join(rel))
}

/// Reads a sysctl (trailing newline removed).
pub fn sysctl_get(ns: Option<BorrowedFd<'_>>, key: &str) -> Result<String> {
    let path = sysctl_path(key)?;
    run_in(ns, || {
        let v = std::fs::read_to_string(&path).map_err(|e| from_io("read sysctl", key, e))?;
        Ok(v.trim_end_matches('\n').to_string())
    })
}

/// Writes a sysctl, skipping the write when it already holds `value`.
pub fn sysctl_set(ns: Option<BorrowedFd<'_>>, key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(key)?;
    run_in(ns, || {
        let current = std::fs::read_to_string(&path).map_err(|e| from_io("read sysctl", key, e))?;
        if current.trim() == value.trim() {
            return Ok(());
        }
        std::fs::write(&path, value)
            .map_err(|e| from_io("write sysctl", format!("{key}={value}"), e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_paths_under_proc_sys_net() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.1/forwarding").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.1/forwarding")
        );
        for bad in [
            "net/../kernel/hostname",
            "/proc/sys/net/ipv4/ip_forward",
            "kernel.hostname",
            "net",
            "net//ipv4",
            "net/ipv4/./ip_forward",
            "",
        ] {
            assert!(matches!(sysctl_path(bad), Err(Error::Invalid(_))), "{bad}");
        }
    }
}
