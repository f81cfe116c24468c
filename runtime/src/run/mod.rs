//! `tether run`: validate everything, then create (state, cgroup, clone, CNI ADD, release), then
//! supervise the container until it exits and clean up. Any failure during creation unwinds what was
//! made, so nothing is left half-made.
//!
//! ```text
//! opts.rs    RunArgs: the flags, as clap parses them        a new flag: a field here
//! fsconf.rs  --read-only, --device, --cgroupns, --privileged: the record's FsConfinement
//! plan.rs    checks and resolves them: the record-to-be     ... and its use here
//! image.rs   IMAGE or command? and what the image gives the container (overlay, Cmd, Env, User)
//! create.rs  reserve the name, cgroup, clone, pin, ADD, release (with kill points for tests)
//! mod.rs     foreground or detached (the supervisor fork), wait, finalize
//! ```

mod create;
mod fsconf;
mod image;
mod opts;
mod plan;

pub use opts::{CommandArgs, RunArgs};

use crate::cgroups::Manager;
use crate::container;
use crate::error::{Context, Error, Result, at};
use crate::paths::Paths;
use crate::process;
use std::io::{Read, Write};

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
pub fn run(paths: &Paths, manager: Manager, args: &RunArgs) -> Result<i32> {
    if let Err(msg) = crate::tty::check_input(args.interactive && !args.detach, args.tty) {
        // Docker's wording and exit code (1: refused before anything was made).
        eprintln!("tether: {msg}");
        return Ok(1);
    }
    let plan = tracing::debug_span!("plan").in_scope(|| plan::plan(paths, manager, args))?;
    if !args.detach {
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

fn create_and_supervise(paths: &Paths, plan: plan::Plan, mut rep: Reporter) -> Result<i32> {
    let id = plan.id.clone();
    let auto_remove = plan.config.auto_remove;
    let detached = plan.config.detached;
    let interactive = plan.config.interactive;
    // -t: the pty exists before the container; the supervisor (or this tether) keeps the master.
    let owner = plan.config.userns.map(|m| m.host_id);
    let mut pty = match plan
        .config
        .tty
        .then(|| crate::tty::Pty::open(owner))
        .transpose()
    {
        Ok(p) => p,
        Err(e) if detached => {
            rep.send(&format!("err {e}"));
            return Ok(125);
        }
        Err(e) => return Err(e),
    };
    let created = create::create(
        paths,
        plan,
        pty.as_ref().and_then(crate::tty::Pty::slave_fd),
    );
    if let Some(p) = pty.as_mut() {
        p.close_slave();
    }
    let (child, netns) = match created {
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
    let code = tracing::debug_span!("wait").in_scope(|| match pty {
        Some(p) => attach_pty(paths, &id, p, child.pid, detached, interactive)
            .or_else(|e| {
                // The container runs on without its terminal's copy; it is still waited for.
                tracing::warn!(error = %e, "attaching to the container's terminal");
                process::wait_forwarding(child.pid)
            })
            .ok(),
        None => process::wait_forwarding(child.pid).ok(),
    });
    child.reaped();
    tracing::debug_span!("finalize").in_scope(|| {
        container::finalize_and_remove(paths, &id, code, netns.as_ref(), auto_remove)
    })?;
    Ok(code.unwrap_or(125))
}

/// `-t`: copies the pty until the container exits. In the foreground with the terminal (and
/// stdin with -i); detached, the supervisor writes the pty's output to the container's log.
fn attach_pty(
    paths: &Paths,
    id: &str,
    pty: crate::tty::Pty,
    pid: nix::unistd::Pid,
    detached: bool,
    interactive: bool,
) -> Result<i32> {
    let mut log;
    let mut stdout;
    let output: &mut dyn Write = if detached {
        let p = paths.container_dir(id).join("container.log");
        log = std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .ctx(at("open", &p))?;
        &mut log
    } else {
        stdout = std::io::stdout();
        &mut stdout
    };
    crate::tty::attach(crate::tty::Attach {
        master: pty.master,
        pid,
        stdin: interactive && !detached,
        forward: !detached,
        output,
    })
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
