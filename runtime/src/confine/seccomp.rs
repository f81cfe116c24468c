//! A resolved profile compiled into classic-BPF seccomp filters (with seccompiler's backend), and
//! their installation in the child.
//!
//! seccompiler builds filters with one match action each, so a profile becomes a stack of
//! filters. The kernel runs every filter of the stack and keeps the strictest answer (KILL >
//! TRAP > ERRNO > TRACE > LOG > ALLOW), the newest filter winning a tie:
//!
//! ```text
//! installed first   base:      every call any rule names ─► ALLOW,  else ─► defaultAction
//! then, one each    action A:  calls of the rules with A ─► A,      else ─► ALLOW
//! ```
//!
//! A call named by a rule gets that rule's action (ALLOW from the base loses to it); any other
//! call gets the default. Names this architecture does not have are skipped, as libseccomp does.

use super::profile::{Action, Op, Resolved};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

fn syscall_nr(name: &str) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    {
        super::syscalls_x86_64::X86_64
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, nr)| *nr)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        None
    }
}

fn target() -> Result<TargetArch, String> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else {
        Err(format!(
            "seccomp profiles are compiled for x86_64 only; on {} use --security-opt seccomp=unconfined",
            std::env::consts::ARCH
        ))
    }
}

fn to_action(a: Action) -> SeccompAction {
    match a {
        Action::Allow => SeccompAction::Allow,
        Action::Errno(e) => SeccompAction::Errno(e),
        Action::KillThread => SeccompAction::KillThread,
        Action::KillProcess => SeccompAction::KillProcess,
        Action::Trap => SeccompAction::Trap,
        Action::Trace(v) => SeccompAction::Trace(v),
        Action::Log => SeccompAction::Log,
    }
}

/// Rules of one filter: call number to alternatives (each an AND of conditions; none = always).
type Chains = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn add(chains: &mut Chains, nr: i64, conds: &[super::profile::Cond]) -> Result<(), String> {
    let entry = chains.entry(nr).or_insert_with(|| Some(Vec::new()));
    if conds.is_empty() {
        // Unconditional: it subsumes every conditional alternative.
        *entry = None;
        return Ok(());
    }
    if let Some(v) = entry {
        let conds = conds
            .iter()
            .map(|c| {
                let op = match c.op {
                    Op::Ne => SeccompCmpOp::Ne,
                    Op::Lt => SeccompCmpOp::Lt,
                    Op::Le => SeccompCmpOp::Le,
                    Op::Eq => SeccompCmpOp::Eq,
                    Op::Ge => SeccompCmpOp::Ge,
                    Op::Gt => SeccompCmpOp::Gt,
                    Op::MaskedEq { mask } => SeccompCmpOp::MaskedEq(mask),
                };
                // 64-bit comparisons, as libseccomp makes them.
                SeccompCondition::new(c.index, SeccompCmpArgLen::Qword, op, c.value)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        v.push(SeccompRule::new(conds).map_err(|e| e.to_string())?);
    }
    Ok(())
}

fn build(
    chains: Chains,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, String> {
    let rules = chains
        .into_iter()
        .map(|(nr, c)| (nr, c.unwrap_or_default()))
        .collect();
    let f = SeccompFilter::new(rules, mismatch, matched, target()?).map_err(|e| e.to_string())?;
    BpfProgram::try_from(f).map_err(|e| format!("compiling the seccomp filter: {e}"))
}

/// The filters to install, in order.
pub fn compile(r: &Resolved) -> Result<Vec<BpfProgram>, String> {
    target()?;
    let mut base = Chains::new();
    let mut by_action: Vec<(Action, Chains)> = Vec::new();
    for rule in &r.rules {
        for name in &rule.names {
            let Some(nr) = syscall_nr(name) else { continue };
            add(&mut base, nr, &rule.conds)?;
            if rule.action == Action::Allow {
                continue;
            }
            let i = match by_action.iter().position(|(a, _)| *a == rule.action) {
                Some(i) => i,
                None => {
                    by_action.push((rule.action, Chains::new()));
                    by_action.len() - 1
                }
            };
            add(&mut by_action[i].1, nr, &rule.conds)?;
        }
    }
    let mut progs = Vec::new();
    if r.default != Action::Allow {
        progs.push(build(base, to_action(r.default), SeccompAction::Allow)?);
    }
    for (a, chains) in by_action {
        progs.push(build(chains, SeccompAction::Allow, to_action(a))?);
    }
    Ok(progs)
}

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

/// In the child: loads the filters. Without no_new_privs this needs CAP_SYS_ADMIN, so it runs
/// before the capabilities are dropped.
pub(super) fn install(progs: &[BpfProgram]) -> Result<(), String> {
    for p in progs {
        let prog = SockFprog {
            len: p.len() as libc::c_ushort,
            filter: p.as_ptr(),
        };
        // SAFETY: the kernel copies the program; `p` outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0 as libc::c_ulong,
                &prog as *const SockFprog,
            )
        };
        if rc != 0 {
            return Err(format!(
                "loading the seccomp filter: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confine::profile;

    #[test]
    fn default_profile_compiles_to_a_base_and_an_enosys_filter() {
        let docker = crate::confine::caps::resolve(&[], &[], false).unwrap();
        let r = profile::resolve("default", profile::DEFAULT_JSON, &docker).unwrap();
        let t = std::time::Instant::now();
        let progs = compile(&r).unwrap();
        eprintln!("compiled in {:?}", t.elapsed());
        assert_eq!(progs.len(), 2);
        assert!(progs[0].len() > 300);
    }

    #[test]
    fn an_allow_default_makes_one_filter() {
        let r = profile::resolve(
            "p",
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat", "no_such_call"], "action": "SCMP_ACT_ERRNO"}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(compile(&r).unwrap().len(), 1);
    }
}
