//! The filesystem and device flags of `tether run` (`--read-only`, `--device`, `--cgroupns`,
//! `--privileged`) checked and turned into the record's [`FsConfinement`]: a bad one is a usage
//! error (exit 125) before anything exists.

use super::opts::RunArgs;
use crate::cgroups::Version;
use crate::cgroups::devices::Device;
use crate::error::{Error, Result};
use crate::process::{MASKED_PATHS, READONLY_PATHS};
use crate::state::FsConfinement;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

pub(super) fn plan(a: &RunArgs, cgroup: Version) -> Result<FsConfinement> {
    let devices = a
        .devices
        .iter()
        .map(|d| parse_device(d))
        .collect::<Result<Vec<_>>>()?;
    let own = |l: &[&str]| -> Vec<String> {
        if a.security.privileged {
            Vec::new()
        } else {
            l.iter().map(|s| s.to_string()).collect()
        }
    };
    Ok(FsConfinement {
        masked_paths: own(MASKED_PATHS),
        readonly_paths: own(READONLY_PATHS),
        read_only_root: a.read_only,
        devices,
        cgroupns_private: match a.cgroupns.as_deref() {
            Some("private") => true,
            Some("host") => false,
            Some(m) => {
                return Err(Error::usage(format!(
                    "--cgroupns {m}: use `private` or `host`"
                )));
            }
            None => cgroup == Version::V2,
        },
    })
}

fn is_perms(s: &str) -> bool {
    !s.is_empty() && s.len() <= 3 && s.chars().all(|c| "rwm".contains(c))
}

/// `HOST[:CONTAINER][:PERMS]`, Docker's syntax; the host path must be a device node.
fn parse_device(spec: &str) -> Result<Device> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, container, access) = match parts[..] {
        [h] => (h, h, "rwm"),
        [h, p] if is_perms(p) => (h, h, p),
        [h, c] => (h, c, "rwm"),
        [h, c, p] if is_perms(p) => (h, c, p),
        _ => {
            return Err(Error::usage(format!(
                "--device {spec}: use HOST[:CONTAINER][:PERMS] with PERMS some of rwm"
            )));
        }
    };
    if !container.starts_with("/dev/") || container.split('/').any(|c| c == "..") {
        return Err(Error::usage(format!(
            "--device {spec}: the container path {container} must be an absolute path under /dev/"
        )));
    }
    let meta = std::fs::metadata(host).map_err(|e| {
        Error::usage(format!(
            "--device {spec}: {host}: {e} (give an existing device node of the host)"
        ))
    })?;
    let kind = if meta.file_type().is_char_device() {
        'c'
    } else if meta.file_type().is_block_device() {
        'b'
    } else {
        return Err(Error::usage(format!(
            "--device {spec}: {host} is not a character or block device"
        )));
    };
    let rdev = meta.rdev();
    Ok(Device {
        host_path: host.into(),
        container_path: container.to_string(),
        kind,
        major: libc::major(rdev),
        minor: libc::minor(rdev),
        access: access.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_follow_dockers_syntax() {
        let d = parse_device("/dev/null").unwrap();
        assert_eq!(
            (
                d.container_path.as_str(),
                d.kind,
                d.major,
                d.minor,
                d.access.as_str()
            ),
            ("/dev/null", 'c', 1, 3, "rwm")
        );
        let d = parse_device("/dev/null:/dev/mynull").unwrap();
        assert_eq!(
            (d.container_path.as_str(), d.access.as_str()),
            ("/dev/mynull", "rwm")
        );
        let d = parse_device("/dev/zero:r").unwrap();
        assert_eq!(
            (d.container_path.as_str(), d.access.as_str()),
            ("/dev/zero", "r")
        );
        let d = parse_device("/dev/zero:/dev/z:rw").unwrap();
        assert_eq!(
            (d.container_path.as_str(), d.access.as_str()),
            ("/dev/z", "rw")
        );
        for bad in [
            "/dev/surely-no-such-device",
            "/etc/passwd",
            "/dev/null:/etc/null",
            "/dev/null:/dev/../x",
            "/dev/null:/dev/x:rwx",
            "a:b:c:d",
        ] {
            assert!(parse_device(bad).is_err(), "{bad} accepted");
        }
    }
}
