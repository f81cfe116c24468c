//! The privilege half of Docker's default confinement: capabilities, the seccomp filter,
//! no_new_privs and the user a container's processes run as. Filesystem confinement (masks,
//! read-only paths, /dev) is elsewhere (process/ and cgroups/).
//!
//! ```text
//! flags (SecurityFlags) ──plan──► Confinement (in state::Config: inspect shows it, exec reuses it)
//!                                   │ prepare(), in the parent: caps parsed, profile resolved and
//!                                   ▼ compiled (errors here are usage errors, nothing created)
//!                                 Prepared ──apply(), in the child, after mounts and pivot──►
//!   no_new_privs off: seccomp, then capabilities and user (loading a filter needs CAP_SYS_ADMIN)
//!   no_new_privs on:  capabilities and user, then no_new_privs, then seccomp (as late as possible)
//!   then execve, which every profile we accept must allow (Docker's does)
//! ```
//!
//! caps.rs      capability names, Docker's defaults, the child's capability and user steps
//! profile.rs   Docker/OCI seccomp JSON, resolved by capabilities, arch and kernel
//! seccomp.rs   the resolved profile as BPF filters (seccompiler), and their installation

pub mod caps;
pub mod profile;
pub mod seccomp;
#[cfg(target_arch = "x86_64")]
mod syscalls_x86_64;

use crate::error::{Error, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const PRIVILEGED_HELP: &str = "Give the container every capability, no seccomp filter, no masked or \
read-only /proc paths, a writable /sys and cgroup filesystem, and every host device. WARNING: a \
privileged container is root on the host in all but its namespaces: it can read and write the host's \
disks, /dev/kmsg and /dev/mem, load kernel modules, change the host's clock and sysctls, and trace or \
kill any process it can see";

const SECURITY_OPT_HELP: &str = "Security options, as Docker's: `no-new-privileges` (setuid binaries and \
file capabilities give nothing), `seccomp=unconfined` (no filter), `seccomp=PROFILE.json` (a \
Docker/OCI seccomp profile instead of Docker's default one)";

/// The security flags of `tether run`, with Docker's names and meanings.
#[derive(Debug, Clone, Default, Args)]
pub struct SecurityFlags {
    /// Add a capability to Docker's default 14 (NET_ADMIN, CAP_SYS_TIME, ... or ALL); repeatable
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability from the defaults (or ALL); repeatable. An add of the same name wins
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    #[arg(long, help = PRIVILEGED_HELP)]
    pub privileged: bool,
    #[arg(long = "security-opt", value_name = "OPT", help = SECURITY_OPT_HELP)]
    pub security_opt: Vec<String>,
    /// Run the command as UID[:GID] (numeric; GID defaults to 0). A non-root user gets no
    /// effective capabilities, as in Docker
    #[arg(short, long, value_name = "UID[:GID]")]
    pub user: Option<String>,
}

/// How the container's calls are filtered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompConfig {
    /// `default` (Docker's built-in profile), `unconfined` or `custom`.
    pub mode: String,
    /// The profile's name: `docker-default (built in)` or the custom file's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// A custom profile's text, kept so that `tether exec` loads what the init loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_json: Option<String>,
}

/// A numeric user and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// The effective confinement of a container's processes (init and `tether exec`'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Confinement {
    /// `--privileged`: every capability, no seccomp (and no filesystem masks: read by the mask
    /// and device setup).
    pub privileged: bool,
    /// The bounding set (and, for uid 0, effective and permitted), `CAP_` names.
    pub capabilities: Vec<String>,
    pub seccomp: SeccompConfig,
    pub no_new_privileges: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
}

impl Default for Confinement {
    /// What a record written before tether confined containers means: full root.
    fn default() -> Self {
        Confinement {
            privileged: true,
            capabilities: caps::all_supported(),
            seccomp: SeccompConfig {
                mode: "unconfined".into(),
                profile: None,
                profile_json: None,
            },
            no_new_privileges: false,
            user: None,
        }
    }
}

const DEFAULT_PROFILE_NAME: &str = "docker-default (built in)";

/// The defaults, for `tether info`.
pub fn defaults() -> serde_json::Value {
    let c = caps::resolve(&[], &[], false).expect("defaults resolve");
    serde_json::json!({
        "capabilities": c,
        "capabilityMask": format!("{:016x}", caps::mask(&c)),
        "seccomp": {"mode": "default", "profile": DEFAULT_PROFILE_NAME},
        "noNewPrivileges": false,
        "user": "0:0",
    })
}

fn parse_user(s: &str) -> Result<User> {
    let (u, g) = s.split_once(':').unwrap_or((s, "0"));
    let num = |x: &str| x.parse::<u32>().ok();
    match (num(u), num(g)) {
        (Some(uid), Some(gid)) => Ok(User { uid, gid }),
        _ => Err(Error::usage(format!(
            "--user {s}: use a numeric UID or UID:GID (user names are not looked up)"
        ))),
    }
}

impl SecurityFlags {
    /// Checks the flags and resolves them (reading a custom profile); compiles nothing yet.
    pub fn confinement(&self) -> Result<Confinement> {
        let mut nnp = false;
        let mut seccomp = SeccompConfig {
            mode: "default".into(),
            profile: Some(DEFAULT_PROFILE_NAME.into()),
            profile_json: None,
        };
        for o in &self.security_opt {
            let (k, v) = match o.split_once(['=', ':']) {
                Some((k, v)) => (k, Some(v)),
                None => (o.as_str(), None),
            };
            match (k, v) {
                ("no-new-privileges", None | Some("true")) => nnp = true,
                ("no-new-privileges", Some("false")) => nnp = false,
                ("seccomp", Some("unconfined")) => {
                    seccomp = SeccompConfig {
                        mode: "unconfined".into(),
                        profile: None,
                        profile_json: None,
                    }
                }
                ("seccomp", Some(path)) if !path.is_empty() => {
                    let p = PathBuf::from(path);
                    let json = std::fs::read_to_string(&p)
                        .map_err(|e| Error::usage(format!("--security-opt seccomp={path}: {e}")))?;
                    seccomp = SeccompConfig {
                        mode: "custom".into(),
                        profile: Some(std::fs::canonicalize(&p).unwrap_or(p).display().to_string()),
                        profile_json: Some(json),
                    }
                }
                _ => {
                    return Err(Error::usage(format!(
                        "unknown --security-opt {o:?}: tether supports no-new-privileges, seccomp=unconfined and seccomp=PROFILE.json (no AppArmor or SELinux labels)"
                    )));
                }
            }
        }
        if self.privileged {
            seccomp = SeccompConfig {
                mode: "unconfined".into(),
                profile: None,
                profile_json: None,
            };
        }
        let c = Confinement {
            privileged: self.privileged,
            capabilities: caps::resolve(&self.cap_add, &self.cap_drop, self.privileged)?,
            seccomp,
            no_new_privileges: nnp,
            user: self.user.as_deref().map(parse_user).transpose()?,
        };
        Ok(c)
    }
}

/// A confinement ready to apply: everything parsed and compiled, so the child only calls the
/// kernel.
#[derive(Debug)]
pub struct Prepared {
    keep: ::caps::CapsHashSet,
    user: Option<(u32, u32)>,
    no_new_privileges: bool,
    filters: Vec<seccompiler::BpfProgram>,
}

/// Resolves and compiles `c` (in the parent, before the clone or exec's fork). A bad custom
/// profile is a usage error.
pub fn prepare(c: &Confinement) -> Result<Prepared> {
    let caps = if c.privileged {
        caps::all_supported()
    } else {
        c.capabilities.clone()
    };
    let filters = match (c.seccomp.mode.as_str(), &c.seccomp.profile_json) {
        ("unconfined", _) => Vec::new(),
        (mode, json) => {
            let (what, json) = match (mode, json) {
                ("custom", Some(j)) => (
                    format!(
                        "--security-opt seccomp={}",
                        c.seccomp.profile.as_deref().unwrap_or("?")
                    ),
                    j.as_str(),
                ),
                _ => (
                    "the default seccomp profile".to_string(),
                    profile::DEFAULT_JSON,
                ),
            };
            let resolved = profile::resolve(&what, json, &caps).map_err(Error::Usage)?;
            seccomp::compile(&resolved).map_err(|e| Error::usage(format!("{what}: {e}")))?
        }
    };
    Ok(Prepared {
        keep: caps::set_of(&caps),
        user: c.user.map(|u| (u.uid, u.gid)),
        no_new_privileges: c.no_new_privileges,
        filters,
    })
}

/// In the child, after its mounts and root are set up, just before exec.
pub fn apply(p: &Prepared) -> std::result::Result<(), String> {
    if !p.no_new_privileges {
        seccomp::install(&p.filters)?;
    }
    caps::apply(&p.keep, p.user)?;
    if p.no_new_privileges {
        // SAFETY: a plain prctl on this thread.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "prctl(PR_SET_NO_NEW_PRIVS): {}",
                std::io::Error::last_os_error()
            ));
        }
        seccomp::install(&p.filters)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(opts: &[&str]) -> SecurityFlags {
        SecurityFlags {
            security_opt: opts.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn security_opts_follow_docker() {
        let c = flags(&[]).confinement().unwrap();
        assert_eq!(c.seccomp.mode, "default");
        assert!(!c.no_new_privileges && !c.privileged);
        assert!(
            flags(&["no-new-privileges"])
                .confinement()
                .unwrap()
                .no_new_privileges
        );
        assert!(
            flags(&["no-new-privileges:true"])
                .confinement()
                .unwrap()
                .no_new_privileges
        );
        assert_eq!(
            flags(&["seccomp=unconfined"])
                .confinement()
                .unwrap()
                .seccomp
                .mode,
            "unconfined"
        );
        let e = flags(&["apparmor=unconfined"]).confinement().unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("unknown --security-opt"));
        let e = flags(&["seccomp=/no/such.json"]).confinement().unwrap_err();
        assert!(e.to_string().contains("seccomp=/no/such.json"), "{e}");
    }

    #[test]
    fn users_are_numeric() {
        assert_eq!(parse_user("1000").unwrap(), User { uid: 1000, gid: 0 });
        assert_eq!(parse_user("1:2").unwrap(), User { uid: 1, gid: 2 });
        assert!(parse_user("nobody").is_err());
    }

    #[test]
    fn preparing_the_default_is_cheap() {
        let c = flags(&[]).confinement().unwrap();
        let t = std::time::Instant::now();
        let p = prepare(&c).unwrap();
        eprintln!("prepared in {:?}", t.elapsed());
        assert_eq!(p.filters.len(), 1);
    }
}
