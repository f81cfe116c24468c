//! In the container's init, between the clone and exec (see `clone.rs` for the handshake), and
//! the one become-root-and-exec routine that `tether exec`'s process runs too. Errors are
//! [`ChildError`]s: the init sends them to the parent, `exec`'s process turns them into its exit
//! code. Nothing here returns to the caller's code.

use super::error::{ChildError, ChildResult, sys};
use super::{devfs, kernfs, masks, rootfs, signals};
use crate::state::Config;
use nix::mount::{MsFlags, mount};
use nix::unistd::{AccessFlags, Gid, Uid};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The `PATH` of a container whose environment sets none, and the default of `tether run`'s.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything the init needs beyond the container's config, prepared before the clone.
#[derive(Debug, Clone)]
pub struct ChildSpec<'a> {
    /// Command, environment, hostname, root, working directory, user namespace.
    pub config: &'a Config,
    /// Files bind-mounted over `<rootfs>/etc/<name>`: (source, name).
    pub etc_files: Vec<(PathBuf, String)>,
    /// Bring `lo` up: the container has a network namespace of its own. CNI runtimes do this
    /// themselves (the bridge plugin only sets up `eth0`).
    pub loopback_up: bool,
    /// Where pinned namespaces live: their copies in the child's mount namespace are dropped.
    pub pin_dir: Option<PathBuf>,
    /// For detached containers: stdout and stderr go here, stdin is /dev/null.
    pub log_fd: Option<RawFd>,
    /// `-t`: the pty slave, the process's controlling terminal and stdio (wins over `log_fd`).
    pub tty: Option<RawFd>,
    /// Capabilities, seccomp, no_new_privs, user: applied last, before exec.
    pub confine: &'a crate::confine::Prepared,
}

/// The init's life until exec: report the error to the parent and leave, or become the command.
pub(super) fn main(spec: &ChildSpec, cgroup_tasks: &[RawFd], sock: OwnedFd) -> ! {
    let mut sock = std::os::unix::net::UnixStream::from(sock);
    let err = setup_and_exec(spec, cgroup_tasks, &mut sock);
    let _ = sock.write_all(err.to_string().as_bytes());
    // SAFETY: leave without running the parent's destructors or atexit handlers.
    unsafe { libc::_exit(127) }
}

fn setup_and_exec(
    spec: &ChildSpec,
    cgroup_tasks: &[RawFd],
    sock: &mut std::os::unix::net::UnixStream,
) -> ChildError {
    let joined = join_cgroup(cgroup_tasks);
    signals::reset();
    if let Err(e) = container_stdio(spec.tty, spec.log_fd, spec.config.interactive) {
        return e;
    }
    // Without a user namespace the whole setup runs while the parent runs CNI ADD (nothing in it
    // depends on the network; the /etc files are bind-mounted now and filled in by the parent
    // before the go-ahead); with one, it needs the id maps the parent writes first. Failures are
    // reported once the parent listens.
    let userns = spec.config.userns.is_some();
    let prepared = joined.and_then(|()| if userns { Ok(()) } else { prepare(spec) });
    let mut go = [0u8; 1];
    match sock.read(&mut go) {
        Ok(1) => {}
        // The parent died or gave up: nothing to report to.
        _ => unsafe { libc::_exit(1) },
    }
    if let Err(e) = prepared {
        return e;
    }
    let c = spec.config;
    become_root_and_exec(userns, &c.command, &c.env, spec.confine, || {
        if userns { prepare(spec) } else { Ok(()) }
    })
}

/// The last steps of every process tether starts in a container (the init, and `tether exec`'s):
/// with a user namespace, become its root (a mapped, unprivileged host id); then `setup`, as that
/// user; then resolve the command in the current root and the environment's `PATH`; then the
/// confinement (`confine::apply`: seccomp, capabilities, user); and exec it with only stdio
/// inherited. Returns only on failure.
pub fn become_root_and_exec(
    userns: bool,
    argv: &[String],
    env: &[String],
    confine: &crate::confine::Prepared,
    setup: impl FnOnce() -> ChildResult<()>,
) -> ChildError {
    let r: ChildResult<std::convert::Infallible> = (|| {
        if userns {
            nix::unistd::setgroups(&[]).map_err(sys("setgroups"))?;
            nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
                .map_err(sys("setresgid(0) in the user namespace"))?;
            nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
                .map_err(sys("setresuid(0) in the user namespace"))?;
        }
        setup()?;
        let path_env = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        let prog = lookup(&argv[0], path_env)?;
        let argv_c = cstrings(argv)?;
        let envp = cstrings(env)?;
        crate::confine::apply(confine).map_err(ChildError::Other)?;
        signals::close_inherited_fds();
        let e = nix::unistd::execve(&prog, &argv_c, &envp).unwrap_err();
        Err(sys(format!("exec {}", argv[0]))(e))
    })();
    match r {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// Everything before exec: hostname, `lo`, mounts, root, working directory.
fn prepare(spec: &ChildSpec) -> ChildResult<()> {
    let c = spec.config;
    nix::unistd::sethostname(&c.hostname).map_err(sys("sethostname"))?;
    if spec.loopback_up {
        set_lo_up().map_err(|e| ChildError::Other(format!("bringing lo up: {e}")))?;
    }
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making / private"))?;
    if let Some(d) = &spec.pin_dir {
        crate::netns::drop_copies(d);
    }
    // -t with the container's own /dev: /dev/console is the terminal (see tty/pty.rs). Every
    // container gets its own tmpfs /dev (devfs.rs) except a privileged one without --rootfs,
    // which keeps the host's: its /dev/console is the host's and stays so. The clone must
    // precede the pivot_root.
    let own_dev = !(c.privileged() && c.rootfs.is_none());
    let console = match spec.tty.is_some() && own_dev {
        true => Some(crate::tty::clone_console().map_err(ChildError::Other)?),
        false => None,
    };
    // Filesystem confinement: kernfs.rs, devfs.rs, then masks.rs in the final root.
    if c.fs.cgroupns_private {
        // After joining the cgroup: it becomes the root the container sees.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(sys("unshare(CLONE_NEWCGROUP)"))?;
    }
    let over_host = c.rootfs.is_none();
    let sys_opts = kernfs::SysOpts {
        privileged: c.privileged(),
        cgroupns_private: c.fs.cgroupns_private,
        over_host,
    };
    let dev_opts = devfs::DevOpts {
        userns: c.userns.is_some(),
        privileged: c.privileged(),
        devices: &c.fs.devices,
        console: None,
        over_host,
    };
    match &c.rootfs {
        Some(root) => {
            if let Some(m) = &c.image {
                rootfs::mount_overlay(m, root)?;
            }
            rootfs::setup(root, &spec.etc_files, sys_opts, dev_opts)?
        }
        None => {
            kernfs::mount_proc(Path::new("/proc"))?;
            kernfs::mount_sys(Path::new("/sys"), sys_opts)?;
            devfs::mount_dev(Path::new("/dev"), dev_opts)?;
        }
    }
    if let Some(tree) = console {
        crate::tty::attach_console(tree).map_err(ChildError::Other)?;
    }
    masks::apply(
        &c.fs.masked_paths,
        &c.fs.readonly_paths,
        c.fs.read_only_root,
    )?;
    if let Some(w) = &c.workdir {
        std::fs::create_dir_all(w).map_err(|e| ChildError::Other(format!("workdir {w}: {e}")))?;
        nix::unistd::chdir(w.as_str()).map_err(sys(format!("workdir {w}")))?;
    } else if c.rootfs.is_some() {
        nix::unistd::chdir("/").map_err(sys("chdir /"))?;
    }
    Ok(())
}

/// Moves this (single-threaded) process into its v1 cgroups: "0" written to `tasks` moves the
/// calling thread, which the kernel does without the global lock a move by pid takes.
fn join_cgroup(tasks: &[RawFd]) -> ChildResult<()> {
    for &fd in tasks {
        // SAFETY: an fd the parent opened for us and nothing else in this process uses; it is
        // closed when `f` drops.
        let f = unsafe { OwnedFd::from_raw_fd(fd) };
        match nix::unistd::write(&f, b"0") {
            Ok(1) => {}
            Ok(_) => {
                return Err(ChildError::Other(
                    "joining the container's cgroup: short write".into(),
                ));
            }
            Err(e) => return Err(sys("joining the container's cgroup")(e)),
        }
    }
    Ok(())
}

/// `ip link set lo up` by ioctl, in the child's own network namespace (no netlink crate here:
/// the child is a forked copy of a single-threaded process and must stay that simple).
fn set_lo_up() -> std::io::Result<()> {
    // SAFETY: a plain socket and SIOC[GS]IFFLAGS on a zeroed ifreq naming "lo".
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(sock);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn cstrings(v: &[String]) -> ChildResult<Vec<CString>> {
    v.iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| ChildError::Other(format!("{s:?} contains a NUL byte")))
        })
        .collect()
}

/// `$PATH` lookup in the current root, with Docker's wording for a missing command.
fn lookup(cmd: &str, path_env: &str) -> ChildResult<CString> {
    let executable = |p: &Path| nix::unistd::access(p, AccessFlags::X_OK).is_ok() && p.is_file();
    let found = if cmd.contains('/') {
        let p = Path::new(cmd);
        if !p.exists() {
            return Err(ChildError::NotFound(format!(
                "exec {cmd}: no such file or directory"
            )));
        }
        Some(p.to_path_buf())
    } else {
        path_env
            .split(':')
            .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(cmd))
            .find(|p| executable(p))
    };
    let p = found.ok_or_else(|| {
        ChildError::NotFound(format!(
            "exec {cmd}: executable file not found in $PATH ({path_env})"
        ))
    })?;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| ChildError::Other(format!("{cmd:?} contains a NUL byte")))
}

/// The process's stdio (`-i`, `-t`, `-d`): the pty slave as controlling terminal; else the log
/// (detached); else tether's own, with stdin `/dev/null` unless `-i`. Shared with `tether exec`.
pub(super) fn container_stdio(
    tty: Option<RawFd>,
    log: Option<RawFd>,
    interactive: bool,
) -> ChildResult<()> {
    if let Some(slave) = tty {
        return crate::tty::make_controlling(slave)
            .map_err(sys("making the pseudo-terminal the controlling terminal"));
    }
    if let Some(fd) = log {
        return redirect_stdio(fd);
    }
    if !interactive {
        crate::tty::stdin_to_null()
            .map_err(|e| ChildError::Other(format!("stdin from /dev/null: {e}")))?;
    }
    Ok(())
}

fn redirect_stdio(log: RawFd) -> ChildResult<()> {
    let null = std::fs::File::open("/dev/null")
        .map_err(|e| ChildError::Other(format!("open /dev/null: {e}")))?;
    // SAFETY: the parent keeps the log file open until after the clone.
    let log = unsafe { BorrowedFd::borrow_raw(log) };
    nix::unistd::dup2_stdin(&null).map_err(sys("dup2"))?;
    nix::unistd::dup2_stdout(log).map_err(sys("dup2"))?;
    nix::unistd::dup2_stderr(log).map_err(sys("dup2"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_kind_of_failure() {
        let e = lookup("surely-no-such-command", "/nonexistent").unwrap_err();
        assert!(matches!(e, ChildError::NotFound(_)));
        assert_eq!(e.exit_code(), 127);
        assert!(e.to_string().contains("executable file not found in $PATH"));
        assert_eq!(
            lookup("/no/such/file", DEFAULT_PATH)
                .unwrap_err()
                .exit_code(),
            127
        );
        assert_eq!(sys("exec x")(nix::errno::Errno::ENOENT).exit_code(), 127);
        assert_eq!(sys("exec x")(nix::errno::Errno::EACCES).exit_code(), 126);
        assert_eq!(ChildError::Other("x".into()).exit_code(), 126);
        let sh = lookup("sh", DEFAULT_PATH).unwrap();
        assert!(sh.to_str().unwrap().ends_with("/sh"));
    }
}
