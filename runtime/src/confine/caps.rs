//! Capabilities: Docker's default set, `--cap-add`/`--cap-drop`/`--privileged` resolved into one
//! list (checked before anything is created), and the child's part: the bounding set, then the
//! user, then effective/permitted/inheritable/ambient, as runc's `finalizeNamespace` does.
//!
//! ```text
//! bounding   = the list                      (dropped while still full root)
//! keepcaps   on; setgroups, setresgid, setresuid (--user); keepcaps off
//! effective  = permitted = the list for uid 0, empty for any other uid (Docker gives a
//!              non-root user its capabilities in the bounding set only, "as execve would")
//! inheritable, ambient = empty
//! ```

use crate::error::{Error, Result};
use caps::{CapSet, Capability, CapsHashSet};
use std::str::FromStr;

/// Docker's 14 (moby `daemon/pkg/oci/caps/defaults.go`): mask 0x00000000a80425fb.
pub const DOCKER_DEFAULT: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` are one capability; `ALL` stays `ALL`.
fn canonical(flag: &str, name: &str) -> Result<String> {
    if name.eq_ignore_ascii_case("all") {
        return Ok("ALL".into());
    }
    let c = caps::to_canonical(name);
    Capability::from_str(&c).map(|c| c.to_string()).map_err(|_| {
        Error::usage(format!(
            "{flag} {name}: unknown capability; use a name from capabilities(7) such as NET_ADMIN or CAP_SYS_TIME, or ALL"
        ))
    })
}

/// Every capability tether itself holds (its bounding set: on most hosts every capability the
/// kernel knows), in number order. A container cannot get more.
pub fn all_supported() -> Vec<String> {
    let mut v: Vec<Capability> = caps::read(None, CapSet::Bounding)
        .unwrap_or_default()
        .into_iter()
        .collect();
    v.sort_by_key(|c| c.index());
    v.iter().map(ToString::to_string).collect()
}

/// The container's capabilities, as Docker's `TweakCapabilities` computes them: privileged is
/// everything; else the defaults, minus `--cap-drop` (ALL drops the defaults), plus `--cap-add`
/// (ALL adds everything), an add beating a drop of the same name.
pub fn resolve(add: &[String], drop: &[String], privileged: bool) -> Result<Vec<String>> {
    let add: Vec<String> = add
        .iter()
        .map(|n| canonical("--cap-add", n))
        .collect::<Result<_>>()?;
    let drop: Vec<String> = drop
        .iter()
        .map(|n| canonical("--cap-drop", n))
        .collect::<Result<_>>()?;
    let all = all_supported();
    if privileged || add.iter().any(|a| a == "ALL") {
        return Ok(all);
    }
    let mut set: Vec<String> = if drop.iter().any(|d| d == "ALL") {
        Vec::new()
    } else {
        DOCKER_DEFAULT
            .iter()
            .map(|s| s.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for a in add {
        if !all.contains(&a) {
            return Err(Error::usage(format!(
                "--cap-add {a}: tether itself does not hold this capability (see CapBnd in /proc/self/status), so no container can have it"
            )));
        }
        if !set.contains(&a) {
            set.push(a);
        }
    }
    // In number order; a default this host lacks is left out, as the kernel would refuse it.
    Ok(all.into_iter().filter(|c| set.contains(c)).collect())
}

/// The capability list as the kernel's hex mask (the `CapEff:` line of /proc/PID/status).
pub fn mask(list: &[String]) -> u64 {
    list.iter()
        .filter_map(|n| Capability::from_str(n).ok())
        .fold(0, |m, c| m | c.bitmask())
}

/// The parsed set, made before the clone so the child only calls the kernel.
pub(super) fn set_of(list: &[String]) -> CapsHashSet {
    list.iter()
        .filter_map(|n| Capability::from_str(n).ok())
        .collect()
}

fn caps_err(what: &str) -> impl FnOnce(caps::errors::CapsError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn sys(what: String) -> impl FnOnce(nix::errno::Errno) -> String {
    move |e| format!("{what}: {e}")
}

/// In the child: bounding set, user, then the other sets. `user` is (uid, gid).
pub(super) fn apply(
    keep: &CapsHashSet,
    user: Option<(u32, u32)>,
) -> std::result::Result<(), String> {
    for c in caps::read(None, CapSet::Bounding).map_err(caps_err("reading the bounding set"))? {
        if !keep.contains(&c) {
            caps::drop(None, CapSet::Bounding, c)
                .map_err(caps_err("dropping a bounding capability"))?;
        }
    }
    let uid = match user {
        Some((uid, gid)) => {
            set_keepcaps(true)?;
            nix::unistd::setgroups(&[]).map_err(sys("setgroups".into()))?;
            let g = nix::unistd::Gid::from_raw(gid);
            nix::unistd::setresgid(g, g, g).map_err(sys(format!("setresgid({gid})")))?;
            let u = nix::unistd::Uid::from_raw(uid);
            nix::unistd::setresuid(u, u, u).map_err(sys(format!("setresuid({uid})")))?;
            set_keepcaps(false)?;
            uid
        }
        None => 0,
    };
    let granted = if uid == 0 {
        keep.clone()
    } else {
        CapsHashSet::new()
    };
    // Effective first: it must stay a subset of permitted at every step.
    caps::set(None, CapSet::Effective, &granted)
        .map_err(caps_err("setting effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &granted)
        .map_err(caps_err("setting permitted capabilities"))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(caps_err("clearing inheritable capabilities"))?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clearing ambient capabilities"))?;
    Ok(())
}

fn set_keepcaps(on: bool) -> std::result::Result<(), String> {
    // SAFETY: a plain prctl on this thread.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, libc::c_ulong::from(on), 0, 0, 0) } != 0 {
        return Err(sys("prctl(PR_SET_KEEPCAPS)".into())(
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults_are_mask_a80425fb() {
        assert_eq!(mask(&resolve(&[], &[], false).unwrap()), 0xa80425fb);
    }

    #[test]
    fn add_and_drop_follow_docker() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let r = resolve(&s(&["net_admin"]), &s(&["CAP_CHOWN", "kill"]), false).unwrap();
        assert!(r.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!r.contains(&"CAP_CHOWN".to_string()) && !r.contains(&"CAP_KILL".to_string()));
        assert_eq!(
            resolve(&s(&["SYS_TIME"]), &s(&["ALL"]), false).unwrap(),
            ["CAP_SYS_TIME"]
        );
        assert_eq!(resolve(&s(&["all"]), &[], false).unwrap(), all_supported());
        assert_eq!(resolve(&[], &[], true).unwrap(), all_supported());
        let e = resolve(&s(&["NET_ADMN"]), &[], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cap-add NET_ADMN: unknown capability"), "{e}");
    }
}
