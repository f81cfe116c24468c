//! Creating a container, in an order that a kill at any point leaves undoable (see orphans.rs):
//!
//! ```text
//! reserve   (root lock) name and port checks, (image store lock) its layers still there,
//!           mkdir, the record: "creating", with the pin's path
//! start     cgroup, clone (init waits), id maps, pin the netns, save pid   kill: rm/prune undo
//!           ADD, /etc files, release (init execs), save "running"
//! failure   abort the init, cleanup (DEL, cgroup, pin), remove the record (kept if cleanup failed)
//! ```

use super::plan::Plan;
use crate::cgroups;
use crate::container;
use crate::error::{Context, Error, Result, at};
use crate::hook::kill_point;
use crate::network;
use crate::paths::Paths;
use crate::process::{self, ChildSpec};
use crate::state::{self, ContainerState, ProcRef, RunState, Status, Store};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// Creates the container and lets it exec. Returns the running child and an fd holding its network
/// namespace (so DEL can still reach the container side after it exits). On error, unwinds.
/// `tty`: the pty slave for the container's stdio (`-t`), which tether closes after this returns.
pub(super) fn create(
    paths: &Paths,
    plan: Plan,
    tty: Option<RawFd>,
) -> Result<(process::Child, Option<OwnedFd>)> {
    let store = Store { paths };
    let dir = paths.container_dir(&plan.id);
    let mut st = ContainerState {
        id: plan.id.clone(),
        name: plan.name.clone(),
        created_at: state::now_rfc3339(),
        state: RunState {
            status: Status::Creating,
            pid: None,
            pid_start_time: None,
            supervisor: ProcRef::of(std::process::id() as i32),
            exit_code: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            error: None,
            cleaned: false,
        },
        config: plan.config.clone(),
        namespaces: Default::default(),
        // Recorded before it exists: removal is idempotent, and whatever of it gets made is found.
        cgroup: Some(plan.cgroup.clone()),
        network: plan.network.clone(),
        log_path: None,
    };
    // Between the plan (which resolved the image) and the record: where a prune could race.
    crate::hook::pause_point("image-planned");
    {
        // Name and port checks and the state's creation are one step under the root lock, so two
        // `tether run --name x` cannot both win.
        let _span = tracing::debug_span!("reserve").entered();
        let _lock = state::root_lock(paths)?;
        for other in store.list() {
            if other.name == st.name {
                return Err(Error::usage(format!(
                    "the container name {:?} is already in use by {} ({}): remove it with `tether rm {}` or pick another name",
                    st.name,
                    other.short_id(),
                    other.effective_status(),
                    st.name
                )));
            }
            if !other.is_running() && other.state.status != Status::Creating {
                continue;
            }
            for p in &plan.network.ports {
                if other.network.ports.iter().any(|q| {
                    q.host_port == p.host_port
                        && q.protocol == p.protocol
                        && (q.host_ip.is_none() || p.host_ip.is_none() || q.host_ip == p.host_ip)
                }) {
                    return Err(Error::usage(format!(
                        "port {}/{} is already published by container {}: pick another host port",
                        p.host_port, p.protocol, other.name
                    )));
                }
            }
        }
        for p in &plan.network.ports {
            network::check_port_free(p)?;
        }
        // Until the record is saved, only the plan knows the image's layers: `image prune`
        // waits on this lock, then sees the record (image/ops.rs hold_layers).
        let _layers = plan
            .config
            .image
            .as_ref()
            .map(|m| crate::image::ops::hold_layers(paths, m))
            .transpose()?;
        std::fs::create_dir_all(&dir).ctx(at("create", &dir))?;
        kill_point("reserved");
        store.save(&st)?;
        crate::hook::pause_point("image-saved");
    }
    let mut netns_fd = None;
    let mut child = None;
    match start(paths, &plan, &mut st, &mut netns_fd, &mut child, tty) {
        Ok(()) => Ok((child.expect("started"), netns_fd)),
        Err(e) => {
            if let Some(c) = child.as_mut() {
                c.abort();
            }
            // Unwind: DEL (when ADD ran), cgroup, state.
            match container::cleanup(paths, &mut st, netns_fd.as_ref()) {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Err(ce) => {
                    // Keep the record: it is all that still leads to the pinned namespace and
                    // to what DEL could not remove, so `tether rm` can finish the job.
                    tracing::warn!(error = %ce, "cleanup after a failed start");
                    st.state.status = Status::Exited;
                    st.state.finished_at = Some(state::now_rfc3339());
                    if let Err(se) = store.save(&st) {
                        tracing::warn!(error = %se, "saving the failed container's state");
                    }
                }
            }
            Err(e)
        }
    }
}

/// Creates `root/rel` without following symlinks out of `root`.
fn make_dir_in(root: &std::path::Path, rel: &str) -> Result<()> {
    let mut cur = root.to_path_buf();
    for c in std::path::Path::new(rel).components() {
        match c {
            std::path::Component::Normal(n) => cur.push(n),
            std::path::Component::RootDir | std::path::Component::CurDir => continue,
            _ => return Err(Error::usage(format!("-w {rel}: '..' is not allowed"))),
        }
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::usage(format!(
                    "-w {rel}: {} is a symlink in the root filesystem",
                    cur.display()
                )));
            }
            Ok(_) => {}
            Err(_) => std::fs::create_dir(&cur).ctx(at("create", &cur))?,
        }
    }
    Ok(())
}

fn start(
    paths: &Paths,
    plan: &Plan,
    st: &mut ContainerState,
    netns_fd: &mut Option<OwnedFd>,
    child_slot: &mut Option<process::Child>,
    tty: Option<RawFd>,
) -> Result<()> {
    let store = Store { paths };
    let dir = paths.container_dir(&plan.id);
    let cg = cgroups::open(&plan.cgroup);
    let join = tracing::debug_span!("cgroup_create").in_scope(|| {
        cg.create(&plan.config.limits)?;
        // Before the init joins: it is confined from its first step.
        let rules = (!plan.config.privileged())
            .then(|| cgroups::devices::default_rules(&plan.config.fs.devices));
        cgroups::devices::apply(&plan.cgroup, rules.as_deref())?;
        cg.join()
    })?;
    kill_point("cgroup");

    let log = if plan.config.detached {
        let p = dir.join("container.log");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .ctx(at("create", &p))?;
        st.log_path = Some(p);
        Some(f)
    } else {
        None
    };
    let etc_files: Vec<(PathBuf, String)> = if plan.config.rootfs.is_some() {
        ["hosts", "hostname", "resolv.conf"]
            .iter()
            .map(|n| {
                let p = dir.join(n);
                std::fs::write(&p, "").ctx(at("create", &p))?;
                Ok((p, n.to_string()))
            })
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    if let Some(m) = &plan.config.image {
        // The overlay's directories: its init mounts them (process/rootfs.rs).
        for d in [
            &m.upper,
            &m.work,
            plan.config.rootfs.as_ref().unwrap_or(&m.upper),
        ] {
            std::fs::create_dir_all(d).ctx(at("create", d))?;
        }
    } else if let (Some(root), Some(w)) = (&plan.config.rootfs, &plan.config.workdir) {
        // Made here, as host root: with --userns the container's root may not write the rootfs.
        make_dir_in(root, w)?;
    }
    let spec = ChildSpec {
        config: &plan.config,
        etc_files,
        loopback_up: plan.network.mode.own_netns(),
        pin_dir: Some(paths.netns_dir()),
        log_fd: log.as_ref().map(|f| f.as_raw_fd()),
        tty,
        confine: &plan.confine,
    };
    let target_netns = match &plan.joined {
        Some(t) => {
            let p = t.live_process().ok_or_else(|| {
                Error::usage(format!(
                    "container {} stopped while we were starting",
                    t.name
                ))
            })?;
            let path = format!("/proc/{}/ns/net", p.pid);
            Some(OwnedFd::from(
                std::fs::File::open(&path).ctx(at("open", path.as_ref()))?,
            ))
        }
        None => None,
    };
    let flags = process::clone_flags(plan.network.mode.own_netns(), plan.config.userns.is_some());
    let child = child_slot.insert(
        tracing::debug_span!("clone")
            .in_scope(|| process::spawn(&spec, flags, target_netns.as_ref(), Some(&join)))?,
    );
    drop((log, join));
    kill_point("cloned");
    let pid = child.pid.as_raw();
    st.state.pid = Some(pid);
    st.state.pid_start_time = state::proc_start_time(pid);

    if let Some(map) = plan.config.userns {
        child.write_id_maps(map)?;
    }
    if !child.in_cgroup {
        tracing::debug_span!("cgroup_attach").in_scope(|| cg.add_pid(pid))?;
    }
    let proc_ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    *netns_fd = Some(OwnedFd::from(
        std::fs::File::open(&proc_ns).ctx(at("open", &proc_ns))?,
    ));
    let ns_path = if plan.network.mode.own_netns() {
        tracing::debug_span!("netns_pin")
            .in_scope(|| crate::netns::pin(&paths.netns_dir(), &plan.id, pid))?
    } else {
        proc_ns
    };
    kill_point("pinned");
    // The pid, before ADD: if tether dies from here on, `rm` finds the init too.
    store.save(st)?;
    kill_point("saved");

    // The conflist is already in the state: if tether dies during ADD, `rm` still runs DEL.
    // The result is saved with the running state below: until then DEL needs only the conflist
    // (saved) and the plugins' cached result.
    let result = st.network.add(paths, &plan.id, ns_path)?.clone();
    kill_point("added");

    if plan.config.rootfs.is_some() {
        // Written in place, never replaced: the child has bind-mounted these very inodes already.
        let w = |n: &str, s: String| {
            let p = dir.join(n);
            std::fs::write(&p, s).ctx(at("write", &p))
        };
        w("hostname", format!("{}\n", plan.config.hostname))?;
        w(
            "hosts",
            network::hosts_file(&plan.network.mode, &plan.config.hostname, Some(&result)),
        )?;
        w(
            "resolv.conf",
            network::resolv_file(&plan.network.mode, Some(&result)),
        )?;
    }

    tracing::debug_span!("release").in_scope(|| child.release())?;
    st.namespaces = process::namespaces_of(pid);
    st.state.status = Status::Running;
    st.state.started_at = Some(state::now_rfc3339());
    store.save(st)?;
    Ok(())
}
