//! `tether run`: validate everything, then create (state, cgroup, clone, CNI ADD, release), then
//! supervise the container until it exits and clean up. Any failure during creation unwinds what was
//! made, so nothing is left half-made.

use crate::cgroups::{self, Limits, Manager};
use crate::container;
use crate::error::{Context, Error, Result, at};
use crate::network::{self, NetMode, NetworkRecord};
use crate::process::{self, ChildSpec};
use crate::state::{self, Config, ContainerState, IdMap, Paths, ProcRef, RunState, Status, Store};
use crate::units::{self, PortMapping};
use cni::runtime::ConfList;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// The flags of `tether run`, as the CLI parsed them.
#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    pub command: Vec<String>,
    pub name: Option<String>,
    pub detach: bool,
    pub auto_remove: bool,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub net: String,
    pub publish: Vec<String>,
    pub hostname: Option<String>,
    pub rootfs: Option<PathBuf>,
    pub userns: bool,
    pub userns_host_id: u32,
    pub userns_size: u32,
    pub limits: crate::cgroups::LimitFlags,
    pub cgroup_parent: Option<String>,
    pub cgroup_manager: Manager,
}

/// Everything checked and resolved before anything is created.
struct Plan {
    id: String,
    name: String,
    mode: NetMode,
    conflist: ConfList,
    ports: Vec<PortMapping>,
    joined: Option<ContainerState>,
    limits: Limits,
    cgroup: cgroups::CgroupRecord,
    config: Config,
}

fn build_env(o: &RunOpts, hostname: &str) -> Result<Vec<String>> {
    let mut env: Vec<String> = vec![
        format!("PATH={}", process::DEFAULT_PATH),
        format!("HOSTNAME={hostname}"),
        "HOME=/root".into(),
    ];
    for e in &o.env {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            // `-e KEY` passes tether's own value, as Docker does.
            None => match std::env::var(e) {
                Ok(v) => (e.clone(), v),
                Err(_) => continue,
            },
        };
        if k.is_empty() || k.contains('\0') {
            return Err(Error::usage(format!("invalid -e {e:?}: use KEY=VALUE")));
        }
        env.retain(|x| x.split_once('=').map(|(a, _)| a) != Some(k.as_str()));
        env.push(format!("{k}={v}"));
    }
    Ok(env)
}

fn plan(paths: &Paths, o: &RunOpts) -> Result<Plan> {
    if o.command.is_empty() || o.command[0].is_empty() {
        return Err(Error::usage(
            "no command given: put it after the options, for example `tether run --net=none -- sh -c 'echo hi'`",
        ));
    }
    let id = state::new_id()?;
    let name = match &o.name {
        Some(n) => {
            state::validate_name(n)?;
            n.clone()
        }
        None => format!("tether-{}", &id[..8]),
    };
    let limits = o.limits.parse()?;
    let mode = NetMode::parse(&o.net)?;
    let ports = o
        .publish
        .iter()
        .map(|p| units::parse_port(p))
        .collect::<Result<Vec<_>>>()?;
    let store = Store { paths };
    let joined = match &mode {
        NetMode::Container(target) => {
            let t = store.find(target).map_err(|_| {
                Error::usage(format!(
                    "--net=container:{target}: no such container (see `tether ps`)"
                ))
            })?;
            if !t.is_running() {
                return Err(Error::usage(format!(
                    "--net=container:{target}: the container is {}; its network namespace exists only while it runs (start one with `tether run -d --name {target} ...`)",
                    t.effective_status()
                )));
            }
            Some(t)
        }
        _ => None,
    };
    let conflist = network::conflist_for(paths, &mode, &ports)?;
    network::check_plugins(&conflist, &paths.cni_path)?;
    let rootfs = match &o.rootfs {
        Some(r) => {
            let c = std::fs::canonicalize(r)
                .map_err(|e| Error::usage(format!("--rootfs {}: {e}", r.display())))?;
            if !c.is_dir() {
                return Err(Error::usage(format!(
                    "--rootfs {} is not a directory",
                    r.display()
                )));
            }
            Some(c)
        }
        None => None,
    };
    if let Some(w) = &o.workdir
        && !w.starts_with('/')
    {
        return Err(Error::usage(format!(
            "-w {w}: the working directory must be an absolute path"
        )));
    }
    let hostname = match &o.hostname {
        Some(h) => {
            if h.is_empty() || h.len() > 64 || h.contains(['/', ' ', '\0']) {
                return Err(Error::usage(format!(
                    "invalid --hostname {h:?}: 1 to 64 characters, no spaces or '/'"
                )));
            }
            h.clone()
        }
        None if mode == NetMode::Host => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| id[..12].to_string()),
        None => id[..12].to_string(),
    };
    if o.userns && o.userns_size == 0 {
        return Err(Error::usage("--userns-size must be at least 1"));
    }
    let cgroup = cgroups::plan(o.cgroup_manager, o.cgroup_parent.as_deref(), &id, &limits)?;
    let config = Config {
        command: o.command.clone(),
        env: build_env(o, &hostname)?,
        workdir: o.workdir.clone(),
        hostname,
        rootfs,
        userns: o.userns.then_some(IdMap {
            host_id: o.userns_host_id,
            size: o.userns_size,
        }),
        limits: limits.clone(),
        auto_remove: o.auto_remove,
        detached: o.detach,
    };
    Ok(Plan {
        id,
        name,
        mode,
        conflist,
        ports,
        joined,
        limits,
        cgroup,
        config,
    })
}

/// Reports the outcome of a detached start to the waiting `tether run -d`.
struct Reporter(Option<std::fs::File>);

impl Reporter {
    fn send(&mut self, msg: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(msg.as_bytes());
        }
    }
}

/// Runs a container; returns the exit code for `tether run` (the container's, in the foreground).
pub fn run(paths: &Paths, o: RunOpts) -> Result<i32> {
    let plan = tracing::debug_span!("plan").in_scope(|| plan(paths, &o))?;
    if !o.detach {
        return create_and_supervise(paths, plan, Reporter(None));
    }
    // Detached: fork the supervisor now, before anything exists; it reports "ok <id>" or the error
    // over a pipe, and this process prints it and exits.
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx("pipe")?;
    // SAFETY: single-threaded; the child continues as the supervisor.
    match unsafe { nix::unistd::fork() }.ctx("failed to fork the supervisor")? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(w);
            let mut msg = String::new();
            std::fs::File::from(r)
                .read_to_string(&mut msg)
                .ctx("failed to read from the supervisor")?;
            match msg.split_once(' ') {
                Some(("ok", id)) => {
                    println!("{id}");
                    Ok(0)
                }
                Some(("err", e)) => Err(Error::Reported(e.to_string())),
                _ => Err(Error::Setup(
                    "the supervisor process died before the container started".into(),
                )),
            }
        }
        nix::unistd::ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            process::ignore_forwarded();
            match create_and_supervise(paths, plan, Reporter(Some(std::fs::File::from(w)))) {
                Ok(code) => Ok(code),
                // Creation errors went to `tether run -d` over the pipe; later ones (cleanup after
                // the container exited) are in the state and in supervisor.log.
                Err(e) => {
                    tracing::error!(error = %e, "supervisor");
                    Ok(125)
                }
            }
        }
    }
}

fn create_and_supervise(paths: &Paths, plan: Plan, mut rep: Reporter) -> Result<i32> {
    let id = plan.id.clone();
    let auto_remove = plan.config.auto_remove;
    let detached = plan.config.detached;
    let (child, netns) = match create(paths, plan) {
        Ok(v) => v,
        Err(e) if detached => {
            rep.send(&format!("err {e}"));
            return Ok(125);
        }
        Err(e) => return Err(e),
    };
    if detached {
        // Nothing may keep the caller's stdout/stderr open once `tether run -d` returns.
        let dir = paths.container_dir(&id);
        if let Err(e) = redirect_supervisor_output(&dir.join("supervisor.log")) {
            tracing::warn!(error = %e, "supervisor output stays where it was");
        }
        rep.send(&format!("ok {id}"));
    } else {
        process::install_forwarding();
    }
    let code = tracing::debug_span!("wait").in_scope(|| process::wait_forwarding(child.pid).ok());
    child.reaped();
    tracing::debug_span!("finalize").in_scope(|| {
        container::finalize_and_remove(paths, &id, code, netns.as_ref(), auto_remove)
    })?;
    Ok(code.unwrap_or(125))
}

fn redirect_supervisor_output(log: &std::path::Path) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .ctx(at("open", log))?;
    let null = std::fs::File::open("/dev/null").ctx("open /dev/null")?;
    nix::unistd::dup2_stdin(&null).ctx("dup2")?;
    nix::unistd::dup2_stdout(&f).ctx("dup2")?;
    nix::unistd::dup2_stderr(&f).ctx("dup2")?;
    Ok(())
}

/// Creates the container and lets it exec. Returns the running child and an fd holding its network
/// namespace (so DEL can still reach the container side after it exits). On error, unwinds.
fn create(paths: &Paths, plan: Plan) -> Result<(process::Child, Option<OwnedFd>)> {
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
        // The pin's path is recorded before the pin exists: whoever finds the record can
        // remove it (see orphans.rs for what a kill before the record leaves).
        network: NetworkRecord::new(
            plan.mode.clone(),
            plan.conflist.clone(),
            plan.ports.clone(),
            plan.joined.as_ref().map(|j| j.id.clone()),
            plan.mode
                .own_netns()
                .then(|| paths.netns_dir().join(&plan.id)),
        ),
        log_path: None,
    };
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
            for p in &plan.ports {
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
        for p in &plan.ports {
            network::check_port_free(p)?;
        }
        std::fs::create_dir_all(&dir).ctx(at("create", &dir))?;
        store.save(&st)?;
    }
    let mut netns_fd = None;
    let mut child = None;
    match start(paths, &plan, &mut st, &mut netns_fd, &mut child) {
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
) -> Result<()> {
    let store = Store { paths };
    let dir = paths.container_dir(&plan.id);
    let cg = cgroups::open(&plan.cgroup);
    let join = tracing::debug_span!("cgroup_create").in_scope(|| {
        cg.create(&plan.limits)?;
        cg.join()
    })?;

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
    if let (Some(root), Some(w)) = (&plan.config.rootfs, &plan.config.workdir) {
        // Made here, as host root: with --userns the container's root may not write the rootfs.
        make_dir_in(root, w)?;
    }
    let spec = ChildSpec {
        config: &plan.config,
        etc_files,
        loopback_up: plan.mode.own_netns(),
        pin_dir: Some(paths.netns_dir()),
        log_fd: log.as_ref().map(|f| f.as_raw_fd()),
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
    let flags = process::clone_flags(plan.mode.own_netns(), plan.config.userns.is_some());
    let child = child_slot.insert(
        tracing::debug_span!("clone")
            .in_scope(|| process::spawn(&spec, flags, target_netns.as_ref(), Some(&join)))?,
    );
    drop((log, join));
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
    let ns_path = if plan.mode.own_netns() {
        tracing::debug_span!("netns_pin")
            .in_scope(|| crate::netns::pin(&paths.netns_dir(), &plan.id, pid))?
    } else {
        proc_ns
    };
    // The pid and the pin, before ADD: if tether dies from here on, `rm` finds both.
    store.save(st)?;

    // The conflist is already in the state: if tether dies during ADD, `rm` still runs DEL.
    // The result is saved with the running state below: until then DEL needs only the conflist
    // (saved) and the plugins' cached result.
    let result = st.network.add(paths, &plan.id, ns_path)?.clone();

    if plan.config.rootfs.is_some() {
        // Written in place, never replaced: the child has bind-mounted these very inodes already.
        let w = |n: &str, s: String| {
            let p = dir.join(n);
            std::fs::write(&p, s).ctx(at("write", &p))
        };
        w("hostname", format!("{}\n", plan.config.hostname))?;
        w(
            "hosts",
            network::hosts_file(&plan.mode, &plan.config.hostname, Some(&result)),
        )?;
        w(
            "resolv.conf",
            network::resolv_file(&plan.mode, Some(&result)),
        )?;
    }

    tracing::debug_span!("release").in_scope(|| child.release())?;
    st.namespaces = process::namespaces_of(pid);
    st.state.status = Status::Running;
    st.state.started_at = Some(state::now_rfc3339());
    store.save(st)?;
    Ok(())
}
