//! Docker/OCI seccomp profiles (the JSON of `docker run --security-opt seccomp=FILE` and of an OCI
//! spec's `linux.seccomp`), parsed and resolved for one container: the `includes`/`excludes` of
//! each rule are decided by the container's capabilities (its bounding set, as moby does), this
//! machine's architecture and kernel version, leaving plain rules for `seccomp.rs` to compile.
//!
//! ```text
//! {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
//!  "architectures" | "archMap": [...],
//!  "syscalls": [{"names": [...], "action": "SCMP_ACT_ALLOW", "errnoRet": 38,
//!                "args": [{"index": 0, "value": 40, "valueTwo": 0, "op": "SCMP_CMP_NE"}],
//!                "includes": {"caps": [...], "arches": [...], "minKernel": "4.8"},
//!                "excludes": {...}}]}
//! ```

use serde::Deserialize;

/// Docker's default profile (moby `profiles/seccomp/default.json`), built into the binary.
pub const DEFAULT_JSON: &str = include_str!("default-seccomp.json");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Syscall>,
    listener_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[allow(dead_code)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    #[serde(default)]
    names: Vec<String>,
    /// The old (Docker 1.12) spelling of a one-name rule.
    name: Option<String>,
    action: String,
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

/// What a matching call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Errno(u32),
    KillThread,
    KillProcess,
    Trap,
    Trace(u32),
    Log,
}

/// An argument comparison, libseccomp's `SCMP_CMP_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `(arg & mask) == value`
    MaskedEq {
        mask: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub index: u8,
    pub op: Op,
    pub value: u64,
}

/// One resolved rule: these calls, when all conditions hold, get `action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub names: Vec<String>,
    pub action: Action,
    pub conds: Vec<Cond>,
}

/// A profile with its conditions decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub default: Action,
    pub rules: Vec<Rule>,
}

/// The Go architecture name moby matches `arches` against, and the libseccomp name of ours.
fn native() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        other => (other, "SCMP_ARCH_NATIVE"),
    }
}

const KNOWN_ARCHES: [&str; 17] = [
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
];

fn action(name: &str, errno: Option<u32>, default_errno: u32) -> Result<Action, String> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => Action::Errno(errno.unwrap_or(default_errno)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_TRACE" => Action::Trace(errno.unwrap_or(libc::EPERM as u32)),
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_NOTIFY" => {
            return Err(
                "SCMP_ACT_NOTIFY needs a seccomp agent (listenerPath), which tether does not run"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "unknown action {other:?}: use SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, SCMP_ACT_TRACE or SCMP_ACT_LOG"
            ));
        }
    })
}

fn op(a: &Arg) -> Result<Cond, String> {
    if a.index > 5 {
        return Err(format!("argument index {} is out of range 0..=5", a.index));
    }
    let (op, value) = match a.op.as_str() {
        "SCMP_CMP_NE" => (Op::Ne, a.value),
        "SCMP_CMP_LT" => (Op::Lt, a.value),
        "SCMP_CMP_LE" => (Op::Le, a.value),
        "SCMP_CMP_EQ" => (Op::Eq, a.value),
        "SCMP_CMP_GE" => (Op::Ge, a.value),
        "SCMP_CMP_GT" => (Op::Gt, a.value),
        // libseccomp: `value` is the mask, `valueTwo` what the masked argument must equal.
        "SCMP_CMP_MASKED_EQ" => (Op::MaskedEq { mask: a.value }, a.value_two),
        other => {
            return Err(format!(
                "unknown op {other:?}: use SCMP_CMP_NE, _LT, _LE, _EQ, _GE, _GT or _MASKED_EQ"
            ));
        }
    };
    Ok(Cond {
        index: a.index,
        op,
        value,
    })
}

/// `"5.8"` (or `"5.8.0-rc1"`) as (5, 8).
fn version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(['.', '-', '+']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

fn kernel() -> (u32, u32) {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| version(&u.release().to_string_lossy()))
        .unwrap_or((0, 0))
}

/// Parses `json` (named `what` in errors) and resolves it for a container with capabilities `caps`
/// (names with the `CAP_` prefix). Errors say what to fix.
pub fn resolve(what: &str, json: &str, caps: &[String]) -> Result<Resolved, String> {
    let p: Profile = serde_json::from_str(json)
        .map_err(|e| format!("{what}: not a seccomp profile: {e} (see the format of Docker's default profile: `tether info` names it)"))?;
    let bad = |m: String| format!("{what}: {m}");
    if p.listener_path.is_some() {
        return Err(bad("listenerPath (a seccomp agent) is not supported".into()));
    }
    if !p.architectures.is_empty() && !p.arch_map.is_empty() {
        return Err(bad("use either architectures or archMap, not both".into()));
    }
    for a in p
        .architectures
        .iter()
        .chain(p.arch_map.iter().map(|m| &m.architecture))
    {
        if !KNOWN_ARCHES.contains(&a.as_str()) && a != "SCMP_ARCH_RISCV64" {
            return Err(bad(format!("unknown architecture {a:?}")));
        }
    }
    let default = action(&p.default_action, p.default_errno_ret, libc::EPERM as u32)
        .map_err(|e| bad(format!("defaultAction: {e}")))?;
    let (goarch, _) = native();
    let kernel = kernel();
    let has = |c: &String| caps.iter().any(|x| x.eq_ignore_ascii_case(c));
    let at_least = |v: &Option<String>| -> Result<Option<bool>, String> {
        match v {
            None => Ok(None),
            Some(s) => version(s)
                .map(|v| Some(kernel >= v))
                .ok_or_else(|| bad(format!("minKernel {s:?}: use MAJOR.MINOR"))),
        }
    };
    let mut rules = Vec::new();
    for (i, s) in p.syscalls.iter().enumerate() {
        let rule_err = |m: String| bad(format!("syscalls[{i}]: {m}"));
        let mut names = s.names.clone();
        names.extend(s.name.clone());
        if names.is_empty() {
            return Err(rule_err("no names".into()));
        }
        // `errnoRet` of a rule defaults to EPERM (runc), not to defaultErrnoRet.
        let act = action(&s.action, s.errno_ret, libc::EPERM as u32).map_err(rule_err)?;
        let conds = s
            .args
            .iter()
            .map(op)
            .collect::<Result<Vec<_>, _>>()
            .map_err(rule_err)?;
        let ex = &s.excludes;
        let excluded = ex.arches.iter().any(|a| a == goarch)
            || ex.caps.iter().any(has)
            || at_least(&ex.min_kernel)? == Some(true);
        let inc = &s.includes;
        let included = (inc.arches.is_empty() || inc.arches.iter().any(|a| a == goarch))
            && inc.caps.iter().all(has)
            && at_least(&inc.min_kernel)? != Some(false);
        if excluded || !included {
            continue;
        }
        rules.push(Rule {
            names,
            action: act,
            conds,
        });
    }
    Ok(Resolved { default, rules })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_for(r: &Resolved, name: &str) -> Vec<(Action, usize)> {
        r.rules
            .iter()
            .filter(|x| x.names.iter().any(|n| n == name))
            .map(|x| (x.action, x.conds.len()))
            .collect()
    }

    #[test]
    fn default_profile_gates_namespace_calls_on_sys_admin() {
        let docker = crate::confine::caps::resolve(&[], &[], false).unwrap();
        let r = resolve("default", DEFAULT_JSON, &docker).unwrap();
        assert_eq!(r.default, Action::Errno(1));
        assert!(names_for(&r, "unshare").is_empty());
        assert!(names_for(&r, "mount").is_empty());
        assert_eq!(names_for(&r, "clone3"), [(Action::Errno(38), 0)]);
        assert_eq!(names_for(&r, "clone"), [(Action::Allow, 1)]);
        assert_eq!(names_for(&r, "socket"), [(Action::Allow, 1)]);
        assert_eq!(names_for(&r, "personality").len(), 5);
        assert_eq!(names_for(&r, "chroot"), [(Action::Allow, 0)]);
        assert!(names_for(&r, "reboot").is_empty());

        let admin = crate::confine::caps::resolve(&["SYS_ADMIN".into()], &[], false).unwrap();
        let r = resolve("default", DEFAULT_JSON, &admin).unwrap();
        assert_eq!(names_for(&r, "unshare"), [(Action::Allow, 0)]);
        assert_eq!(names_for(&r, "clone"), [(Action::Allow, 0)]);
        assert_eq!(names_for(&r, "clone3"), [(Action::Allow, 0)]);
    }

    #[test]
    fn malformed_profiles_say_what_to_fix() {
        let e = |j: &str| resolve("p.json", j, &[]).unwrap_err();
        assert!(e("{").contains("p.json: not a seccomp profile"));
        assert!(e(r#"{"defaultAction": "SCMP_ACT_NOPE"}"#).contains("unknown action"));
        assert!(
            e(r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOME"}]}]}"#)
                .contains("syscalls[0]: unknown op")
        );
        assert!(
            e(r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}"#)
                .contains("unknown architecture")
        );
    }
}
