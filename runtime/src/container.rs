//! Lifecycle operations on existing containers. Every one of them works from the state on disk
//! alone, so they also repair what a killed `tether run` left behind.

use crate::cgroups;
use crate::error::{Context, Error, Result};
use crate::process;
use crate::state::{self, ContainerState, Paths, Status, Store};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// Waits up to `timeout` for the container's init to be gone.
fn wait_gone(st: &ContainerState, timeout: Duration) -> bool {
    st.live_process()
        .is_none_or(|p| process::wait_exit(p, timeout))
}

/// Opens the network namespace of a live container, so DEL can reach it after the process dies.
fn hold_netns(st: &ContainerState) -> Option<OwnedFd> {
    let p = st.live_process()?;
    let f = std::fs::File::open(format!("/proc/{}/ns/net", p.pid)).ok()?;
    // The pid could have been reused between the check and the open.
    p.alive().then(|| OwnedFd::from(f))
}

/// Undoes everything a container holds: kills what is left in its cgroup, runs CNI DEL (in reverse
/// plugin order, with the cached result), and removes the cgroup. Keeps going after errors.
pub fn cleanup(paths: &Paths, st: &mut ContainerState, netns: Option<&OwnedFd>) -> Result<()> {
    let mut errors: Vec<String> = Vec::new();
    let cg = st.cgroup.as_ref().map(cgroups::open);
    if let Some(cg) = &cg {
        if cg.oom_kills() > 0 {
            st.state.oom_killed = true;
        }
        // A frozen cgroup cannot die (v1): thaw first.
        if cg.is_frozen() {
            let _ = cg.thaw();
        }
        if let Err(e) = tracing::debug_span!("cgroup_kill").in_scope(|| cg.kill_all()) {
            errors.push(e.to_string());
        }
    }
    let st_ref = &*st;
    let (net_errors, cg_result) = std::thread::scope(|s| {
        // Nothing is left in the cgroup to wait for: its removal runs beside the plugins' DEL.
        let remover = cg.as_deref().map(|cg| {
            let parent = tracing::Span::current();
            s.spawn(move || {
                tracing::debug_span!(parent: &parent, "cgroup_remove").in_scope(|| cg.remove())
            })
        });
        let net = st_ref.network.down(paths, &st_ref.id, netns);
        (
            net,
            remover.map(|h| h.join().expect("cgroup removal does not panic")),
        )
    });
    errors.extend(net_errors);
    if let Some(Err(e)) = cg_result {
        errors.push(e.to_string());
    }
    if errors.is_empty() {
        st.state.cleaned = true;
        st.state.error = None;
        Ok(())
    } else {
        let msg = errors.join("; ");
        st.state.error = Some(msg.clone());
        Err(Error::Setup(format!(
            "cleanup of {} incomplete: {msg}; fix the cause and run `tether rm -f {}` again",
            st.name, st.name
        )))
    }
}

/// Records that the container stopped and cleans up after it, once. Safe to call from the
/// supervisor and from `stop`/`rm` at the same time (serialized by the container lock).
pub fn finalize(
    paths: &Paths,
    id: &str,
    exit_code: Option<i32>,
    netns: Option<&OwnedFd>,
) -> Result<()> {
    finalize_and_remove(paths, id, exit_code, netns, false)
}

/// [`finalize`]; with `remove` (`run --rm`) the state is then removed, still under the lock, instead
/// of being written once more. A failed cleanup always keeps it.
pub fn finalize_and_remove(
    paths: &Paths,
    id: &str,
    exit_code: Option<i32>,
    netns: Option<&OwnedFd>,
    remove: bool,
) -> Result<()> {
    let store = Store { paths };
    let _lock = state::container_lock(paths, id)?;
    let Ok(mut st) = store.load(id) else {
        // Removed meanwhile (`rm -f`): nothing left to do.
        return Ok(());
    };
    if exit_code.is_some() {
        st.state.exit_code = exit_code;
    }
    if st.state.status != Status::Exited {
        st.state.status = Status::Exited;
        st.state.finished_at = Some(state::now_rfc3339());
    }
    let r = if st.state.cleaned {
        Ok(())
    } else {
        cleanup(paths, &mut st, netns)
    };
    if remove && r.is_ok() {
        return tracing::debug_span!("remove_state").in_scope(|| remove_state(paths, id));
    }
    store.save(&st)?;
    r
}

/// Removes the state directory (the container must be cleaned up).
pub fn remove_state(paths: &Paths, id: &str) -> Result<()> {
    let _root = state::root_lock(paths)?;
    let dir = paths.container_dir(id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).ctx(format!("failed to remove {}", dir.display())),
    }
    let _ = std::fs::remove_file(paths.containers().join(format!(".{id}.lock")));
    Ok(())
}

/// After the process died: let a live supervisor record the exit and clean up, else do it here.
fn settle(paths: &Paths, st: &ContainerState, netns: Option<&OwnedFd>) -> Result<()> {
    let store = Store { paths };
    if st
        .state
        .supervisor
        .is_some_and(|s| s.alive() && s.pid != std::process::id() as i32)
    {
        // It exits once it has recorded the exit and cleaned up (or removed the state).
        let sup = st.state.supervisor.expect("checked");
        process::wait_exit(sup, Duration::from_secs(10));
        if store.load(&st.id).map_or(true, |s| s.state.cleaned) {
            return Ok(());
        }
        tracing::warn!(container = %st.name, "the supervisor did not clean up in time; doing it here");
    }
    finalize(paths, &st.id, None, netns)
}

fn signal_container(st: &ContainerState, sig: Signal) -> Result<()> {
    let p = st
        .live_process()
        .ok_or_else(|| Error::usage(format!("container {} is not running", st.name)))?;
    kill(Pid::from_raw(p.pid), sig).ctx(format!("failed to send {sig} to {}", st.name))
}

/// Kills the container's processes now and waits for its init to be gone.
fn kill_now(st: &ContainerState) -> Result<()> {
    if let Some(rec) = &st.cgroup {
        let cg = cgroups::open(rec);
        if cg.is_frozen() {
            let _ = cg.thaw();
        }
    }
    if let Some(p) = st.live_process() {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
    }
    // The init's death takes its PID namespace with it; the cgroup is swept after that, when
    // usually nothing is left in it (a v1 freezer cannot freeze tasks that are busy exiting).
    let gone = wait_gone(st, Duration::from_secs(10));
    if let Some(rec) = &st.cgroup {
        let _ = cgroups::open(rec).kill_all();
    }
    if gone {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "container {} did not die after SIGKILL",
            st.name
        )))
    }
}

/// `tether stop`: SIGTERM, then SIGKILL after `timeout`, then cleanup.
pub fn stop(paths: &Paths, name: &str, timeout: Duration) -> Result<()> {
    let st = Store { paths }.find(name)?;
    match st.effective_status() {
        Status::Exited => return Ok(()),
        Status::Dead => return finalize(paths, &st.id, None, None),
        Status::Creating => {
            return Err(Error::usage(format!(
                "container {name} is still being created: try again, or `tether rm -f {name}`"
            )));
        }
        Status::Running | Status::Paused => {}
    }
    let netns = hold_netns(&st);
    if let Some(rec) = &st.cgroup {
        let cg = cgroups::open(rec);
        if cg.is_frozen() {
            let _ = cg.thaw();
        }
    }
    signal_container(&st, Signal::SIGTERM)?;
    if !wait_gone(&st, timeout) {
        kill_now(&st)?;
    }
    settle(paths, &st, netns.as_ref())
}

/// `tether kill`: sends a signal; if it ends the container and nobody supervises it, cleans up.
pub fn kill_container(paths: &Paths, name: &str, sig: Signal) -> Result<()> {
    let st = Store { paths }.find(name)?;
    if !st.is_running() {
        return Err(Error::usage(format!(
            "container {name} is not running (status {})",
            st.effective_status()
        )));
    }
    let netns = hold_netns(&st);
    signal_container(&st, sig)?;
    if sig == Signal::SIGKILL
        && let Some(rec) = &st.cgroup
    {
        let cg = cgroups::open(rec);
        if cg.is_frozen() {
            let _ = cg.thaw();
        }
    }
    if wait_gone(&st, Duration::from_secs(1)) {
        settle(paths, &st, netns.as_ref())?;
    }
    Ok(())
}

/// `tether rm`: refuses a running container unless `force`; then cleans up and removes the state.
pub fn rm(paths: &Paths, name: &str, force: bool) -> Result<()> {
    let st = Store { paths }.find(name)?;
    let status = st.effective_status();
    let busy = matches!(status, Status::Running | Status::Paused | Status::Creating);
    if busy && !force {
        return Err(Error::usage(format!(
            "container {name} is {status}: stop it first (`tether stop {name}`) or use `tether rm -f {name}`"
        )));
    }
    if busy {
        let netns = hold_netns(&st);
        kill_now(&st)?;
        settle(paths, &st, netns.as_ref())?;
    } else {
        finalize(paths, &st.id, None, None)?;
    }
    remove_state(paths, &st.id)
}

pub fn pause(paths: &Paths, name: &str, freeze: bool) -> Result<()> {
    let store = Store { paths };
    let st = store.find(name)?;
    let _lock = state::container_lock(paths, &st.id)?;
    let mut st = store.load(&st.id)?;
    let want = if freeze {
        Status::Running
    } else {
        Status::Paused
    };
    if st.effective_status() != want {
        return Err(Error::usage(format!(
            "container {name} is {}, not {want}",
            st.effective_status()
        )));
    }
    let rec = st
        .cgroup
        .as_ref()
        .ok_or_else(|| Error::usage(format!("container {name} has no cgroup")))?;
    let cg = cgroups::open(rec);
    if freeze {
        cg.freeze()?;
        st.state.status = Status::Paused;
    } else {
        cg.thaw()?;
        st.state.status = Status::Running;
    }
    store.save(&st)
}

/// `tether exec`: joins the container's cgroup and namespaces and runs a command there.
pub fn exec(
    paths: &Paths,
    name: &str,
    argv: Vec<String>,
    env: &[String],
    workdir: Option<String>,
    (interactive, tty): (bool, bool),
) -> Result<i32> {
    if let Err(msg) = crate::tty::check_input(interactive, tty) {
        // Docker's wording and exit code (1: refused before anything ran).
        eprintln!("tether: {msg}");
        return Ok(1);
    }
    let st = Store { paths }.find(name)?;
    match st.effective_status() {
        Status::Running => {}
        Status::Paused => {
            return Err(Error::usage(format!(
                "container {name} is paused: `tether unpause {name}` first"
            )));
        }
        s => {
            return Err(Error::usage(format!(
                "container {name} is not running (status {s})"
            )));
        }
    }
    let p = st.live_process().expect("running container has a process");
    let mut full_env = st.config.env.clone();
    for e in env {
        let (k, _) = e.split_once('=').unwrap_or((e, ""));
        full_env.retain(|x| x.split_once('=').map(|(a, _)| a) != Some(k));
        full_env.push(if e.contains('=') {
            e.clone()
        } else {
            format!("{e}={}", std::env::var(e).unwrap_or_default())
        });
    }
    // The init's confinement, compiled again (the filter depends only on the record).
    let confine = crate::confine::prepare(&st.config.confinement)?;
    if let Some(rec) = &st.cgroup {
        cgroups::open(rec).add_pid(std::process::id() as i32)?;
    }
    let owner = st.config.userns.map(|m| m.host_id);
    let pty = tty.then(|| crate::tty::Pty::open(owner)).transpose()?;
    process::exec_in(
        p.pid,
        process::ExecSpec {
            argv,
            env: full_env,
            workdir: workdir
                .or_else(|| st.config.workdir.clone())
                .unwrap_or_else(|| "/".into()),
            userns: st.config.userns.is_some(),
            interactive,
            tty: pty,
            confine,
        },
    )
}

/// Cgroup figures of a running container.
pub fn stats(paths: &Paths, name: &str) -> Result<(ContainerState, cgroups::Stats)> {
    let st = Store { paths }.find(name)?;
    if !st.is_running() {
        return Err(Error::usage(format!(
            "container {name} is not running (status {}): stats exist only while it runs",
            st.effective_status()
        )));
    }
    let rec = st
        .cgroup
        .as_ref()
        .ok_or_else(|| Error::usage(format!("container {name} has no cgroup")))?;
    let s = cgroups::open(rec).stats()?;
    Ok((st, s))
}

/// The state as `inspect` shows it: the status with reality applied and live OOM figures.
pub fn inspect(paths: &Paths, name: &str) -> Result<ContainerState> {
    let mut st = Store { paths }.find(name)?;
    st.state.status = st.effective_status();
    if st.is_running()
        && let Some(rec) = &st.cgroup
        && cgroups::open(rec).oom_kills() > 0
    {
        st.state.oom_killed = true;
    }
    Ok(st)
}
