//! The process model: clone the container's init straight into its new namespaces and cgroups (v2:
//! `clone3(CLONE_INTO_CGROUP)`; v1: it moves itself first thing), hold it on a sync socket while the
//! parent writes id maps and runs CNI ADD, then let it exec. Without a user namespace it does its own
//! setup (hostname, mounts, root) while ADD runs; with one, after the go-ahead. It is PID 1 of its
//! PID namespace.
//!
//! `tether` is single-threaded (no async runtime), so the child is a plain fork-like `clone`: it
//! runs on a copy of the parent's memory and stack, and only ever leaves through `execve` or `_exit`.

use crate::cgroups::Join;
use crate::error::{Context, Error, Result};
use crate::poll::poll_until;
use crate::state::{IdMap, ProcRef};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigHandler, SigSet, Signal, kill, signal};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::{Gid, Pid, Uid};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Everything the child needs, prepared before the clone.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub hostname: String,
    pub rootfs: Option<PathBuf>,
    /// Files bind-mounted over `<rootfs>/etc/<name>`: (source, name).
    pub etc_files: Vec<(PathBuf, String)>,
    pub workdir: Option<String>,
    pub userns: bool,
    /// Bring `lo` up: the container has a network namespace of its own. CNI runtimes do this
    /// themselves (the bridge plugin only sets up `eth0`).
    pub loopback_up: bool,
    /// Where pinned namespaces live: their copies in the child's mount namespace are dropped.
    pub pin_dir: Option<PathBuf>,
    /// For detached containers: stdout and stderr go here, stdin is /dev/null.
    pub log_fd: Option<RawFd>,
}

/// A cloned container init waiting for the go-ahead.
pub struct Child {
    pub pid: Pid,
    /// Whether it was born in its cgroup or enters it by itself (else the parent must move it).
    pub in_cgroup: bool,
    sock: std::os::unix::net::UnixStream,
    released: bool,
}

/// Waits up to `timeout` for `p` to exit (a zombie has); true once it has. Blocks on a pidfd, so
/// it returns the moment the process dies instead of at the next poll.
pub fn wait_exit(p: ProcRef, timeout: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid, 0) };
    if fd < 0 {
        return match nix::errno::Errno::last() {
            nix::errno::Errno::ESRCH => true,
            // Before Linux 5.3.
            _ => poll_until(timeout, || !p.alive()),
        };
    }
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // Checked after the open: if the pid was reused before, the fd is someone else's and ours is
    // long gone.
    if !p.alive() {
        return true;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            0 => return !p.alive(),
            n if n > 0 => return true,
            _ if nix::errno::Errno::last() == nix::errno::Errno::EINTR => continue,
            _ => return poll_until(left, || !p.alive()),
        }
    }
}

/// The clone flags for a container.
pub fn clone_flags(own_netns: bool, userns: bool) -> CloneFlags {
    let mut f = CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS;
    if own_netns {
        f |= CloneFlags::CLONE_NEWNET;
    }
    if userns {
        f |= CloneFlags::CLONE_NEWUSER;
    }
    f
}

/// From `linux/sched.h` (libc's constant is an `i32` that overflows).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of `clone3(2)`, as of Linux 5.7 (`cgroup` is the last field).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// fork-like `clone(2)`: no new stack, the child continues on a copy of ours. Returns 0 in the child.
/// With `cgroup` (a v2 cgroup directory), `clone3(CLONE_INTO_CGROUP)`: the child is born there.
fn raw_clone(flags: CloneFlags, cgroup: Option<RawFd>) -> nix::Result<libc::pid_t> {
    // SAFETY: with a null stack pointer (and size) clone and clone3 behave like fork; tether is
    // single-threaded here, so the child inherits no locked mutexes.
    let rc = unsafe {
        match cgroup {
            Some(fd) => {
                let args = CloneArgs {
                    flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
                    exit_signal: libc::SIGCHLD as u64,
                    cgroup: fd as u64,
                    ..Default::default()
                };
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            }
            None => libc::syscall(
                libc::SYS_clone,
                (flags.bits() as libc::c_long) | libc::SIGCHLD as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
            ),
        }
    };
    if rc < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(rc as libc::pid_t)
    }
}

/// Clones the container init. With `join_netns`, the child is born in that network namespace: the
/// parent enters it for the duration of the clone (it is single-threaded) and returns to its own.
/// With `cgroup`, the child starts in its cgroup (v2) or moves itself there at once (v1); see
/// [`Child::in_cgroup`].
pub fn spawn(
    spec: &ChildSpec,
    flags: CloneFlags,
    join_netns: Option<&OwnedFd>,
    cgroup: Option<&Join>,
) -> Result<Child> {
    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx("failed to create the sync socket")?;
    let own_netns = match join_netns {
        Some(target) => {
            let own = std::fs::File::open("/proc/thread-self/ns/net")
                .ctx("failed to open tether's own network namespace")?;
            nix::sched::setns(target, CloneFlags::CLONE_NEWNET)
                .ctx("failed to enter the target container's network namespace")?;
            Some(own)
        }
        None => None,
    };
    let into = match cgroup {
        Some(Join::Dir(d)) => Some(d.as_raw_fd()),
        _ => None,
    };
    let tasks: Vec<RawFd> = match cgroup {
        Some(Join::Tasks(v)) => v.iter().map(AsRawFd::as_raw_fd).collect(),
        _ => Vec::new(),
    };
    let mut in_cgroup = cgroup.is_some();
    let mut cloned = raw_clone(flags, into);
    if into.is_some()
        && matches!(
            cloned,
            Err(nix::errno::Errno::ENOSYS | nix::errno::Errno::E2BIG | nix::errno::Errno::EINVAL)
        )
    {
        // A kernel without clone3 or CLONE_INTO_CGROUP (before 5.7): the parent moves the child.
        in_cgroup = false;
        cloned = raw_clone(flags, None);
    }
    if let Ok(0) = cloned {
        drop(parent_end);
        child_main(spec, &tasks, child_end);
    }
    if let Some(own) = own_netns {
        // Not being able to return would leave every later step in the wrong namespace.
        nix::sched::setns(&own, CloneFlags::CLONE_NEWNET)
            .expect("return to tether's own network namespace");
    }
    let pid = cloned.map_err(|e| {
        let hint = if e == nix::errno::Errno::EPERM || e == nix::errno::Errno::EINVAL {
            " (tether needs root, or CAP_SYS_ADMIN for namespaces)"
        } else if e == nix::errno::Errno::ENOSPC {
            " (the namespace limit in /proc/sys/user/max_*_namespaces is reached)"
        } else {
            ""
        };
        Error::Sys {
            what: format!("failed to clone the container process{hint}"),
            source: e,
        }
    })?;
    drop(child_end);
    Ok(Child {
        pid: Pid::from_raw(pid),
        in_cgroup,
        sock: std::os::unix::net::UnixStream::from(parent_end),
        released: false,
    })
}

impl Child {
    /// Writes `0 <host_id> <size>` to the child's uid and gid maps.
    pub fn write_id_maps(&self, map: IdMap) -> Result<()> {
        let line = format!("0 {} {}\n", map.host_id, map.size);
        for f in ["uid_map", "gid_map"] {
            let p = format!("/proc/{}/{f}", self.pid);
            std::fs::write(&p, &line).ctx(format!("failed to write {line:?} to {p}"))?;
        }
        Ok(())
    }

    /// Lets the child finish its setup and exec; returns once it has exec'd, or with its error.
    pub fn release(&mut self) -> Result<()> {
        self.released = true;
        self.sock
            .write_all(b"G")
            .ctx("failed to signal the container process (did it die?)")?;
        // The socket is close-on-exec: EOF means exec succeeded; anything else is the error, in
        // one datagram (a short read would truncate it, so the buffer is large).
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match self.sock.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.ctx("failed to read from the container process")?,
            }
        };
        if n == 0 {
            Ok(())
        } else {
            Err(Error::Setup(
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ))
        }
    }

    /// Marks a child that `wait_forwarding` already reaped (its pid may be reused: never signal it).
    pub fn reaped(mut self) {
        self.released = true;
    }

    /// Kills and reaps a child that will not be released.
    pub fn abort(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
        self.released = true;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.released {
            self.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// In the child. Errors are strings sent to the parent; nothing here returns.

fn child_main(spec: &ChildSpec, cgroup_tasks: &[RawFd], sock: OwnedFd) -> ! {
    let mut sock = std::os::unix::net::UnixStream::from(sock);
    let err = match child_setup(spec, cgroup_tasks, &mut sock) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = sock.write_all(err.as_bytes());
    // SAFETY: leave without running the parent's destructors or atexit handlers.
    unsafe { libc::_exit(127) }
}

type ChildResult<T> = std::result::Result<T, String>;

fn errno(what: impl std::fmt::Display) -> impl FnOnce(nix::errno::Errno) -> String {
    move |e| format!("{what}: {e}")
}

fn child_setup(
    spec: &ChildSpec,
    cgroup_tasks: &[RawFd],
    sock: &mut std::os::unix::net::UnixStream,
) -> ChildResult<std::convert::Infallible> {
    let joined = join_cgroup(cgroup_tasks);
    reset_signals();
    if let Some(fd) = spec.log_fd {
        redirect_stdio(fd)?;
    }
    // Without a user namespace the whole setup runs while the parent runs CNI ADD (nothing in it
    // depends on the network; the /etc files are bind-mounted now and filled in by the parent
    // before the go-ahead); with one, it needs the id maps the parent writes first. Failures are
    // reported once the parent listens.
    let prepared = if spec.userns {
        joined.map(|()| None)
    } else {
        joined.and_then(|()| prepare(spec)).map(Some)
    };
    let mut go = [0u8; 1];
    match sock.read(&mut go) {
        Ok(1) => {}
        // The parent died or gave up: nothing to report to.
        _ => unsafe { libc::_exit(1) },
    }
    let exec = match prepared? {
        Some(exec) => exec,
        None => {
            // Become the container's root (a mapped, unprivileged host id).
            nix::unistd::setgroups(&[]).map_err(errno("setgroups"))?;
            nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
                .map_err(errno("setresgid(0) in the user namespace"))?;
            nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
                .map_err(errno("setresuid(0) in the user namespace"))?;
            prepare(spec)?
        }
    };
    close_inherited_fds();
    let e = nix::unistd::execve(&exec.prog, &exec.argv, &exec.envp).unwrap_err();
    Err(format!("exec {}: {e}", spec.argv[0]))
}

/// The container's command, resolved in its root.
struct Exec {
    prog: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

/// Everything before exec: hostname, `lo`, mounts, root, working directory, the command's path.
fn prepare(spec: &ChildSpec) -> ChildResult<Exec> {
    nix::unistd::sethostname(&spec.hostname).map_err(errno("sethostname"))?;
    if spec.loopback_up {
        set_lo_up().map_err(|e| format!("bringing lo up: {e}"))?;
    }
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(errno("making / private"))?;
    if let Some(d) = &spec.pin_dir {
        crate::netns::drop_copies(d);
    }
    match &spec.rootfs {
        Some(root) => setup_rootfs(root, &spec.etc_files)?,
        None => mount_proc(Path::new("/proc"))?,
    }
    if let Some(w) = &spec.workdir {
        std::fs::create_dir_all(w).map_err(|e| format!("workdir {w}: {e}"))?;
        nix::unistd::chdir(w.as_str()).map_err(errno(format!("workdir {w}")))?;
    } else if spec.rootfs.is_some() {
        nix::unistd::chdir("/").map_err(errno("chdir /"))?;
    }
    let path_env = spec
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    Ok(Exec {
        prog: lookup(&spec.argv[0], path_env)?,
        argv: cstrings(&spec.argv)?,
        envp: cstrings(&spec.env)?,
    })
}

/// Moves this (single-threaded) process into its v1 cgroups: "0" written to `tasks` moves the
/// calling thread, which the kernel does without the global lock a move by pid takes.
fn join_cgroup(tasks: &[RawFd]) -> ChildResult<()> {
    for &fd in tasks {
        // SAFETY: a write to, then the close of, an fd the parent opened for us.
        let rc = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        let err = std::io::Error::last_os_error();
        unsafe { libc::close(fd) };
        if rc != 1 {
            return Err(format!("joining the container's cgroup: {err}"));
        }
    }
    Ok(())
}

/// `ip link set lo up` by ioctl, in the child's own network namespace.
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
        .map(|s| CString::new(s.as_bytes()).map_err(|_| format!("{s:?} contains a NUL byte")))
        .collect()
}

/// `$PATH` lookup in the container's root, with Docker's wording for a missing command.
fn lookup(cmd: &str, path_env: &str) -> ChildResult<CString> {
    let executable = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .ok()
            .is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0)
            && p.is_file()
    };
    let found = if cmd.contains('/') {
        let p = Path::new(cmd);
        if !p.exists() {
            return Err(format!("exec {cmd}: no such file or directory"));
        }
        Some(p.to_path_buf())
    } else {
        path_env
            .split(':')
            .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(cmd))
            .find(|p| executable(p))
    };
    let p = found
        .ok_or_else(|| format!("exec {cmd}: executable file not found in $PATH ({path_env})"))?;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{cmd:?} contains a NUL byte"))
}

/// Default dispositions and an empty mask: exec keeps ignored signals ignored, and Rust ignores
/// SIGPIPE at startup.
pub(crate) fn reset_signals() {
    for n in 1..32 {
        if let Ok(s) = Signal::try_from(n)
            && s != Signal::SIGKILL
            && s != Signal::SIGSTOP
        {
            // SAFETY: installing SIG_DFL is always sound.
            let _ = unsafe { signal(s, SigHandler::SigDfl) };
        }
    }
    let _ = SigSet::empty().thread_set_mask();
}

/// Marks every fd above stderr close-on-exec, so the command inherits only stdio.
pub(crate) fn close_inherited_fds() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

fn redirect_stdio(log: RawFd) -> ChildResult<()> {
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    // SAFETY: dup2 onto the standard descriptors of this (single-threaded) child.
    unsafe {
        if libc::dup2(null.as_raw_fd(), 0) < 0 || libc::dup2(log, 1) < 0 || libc::dup2(log, 2) < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn mount_proc(target: &Path) -> ChildResult<()> {
    mount(
        Some("proc"),
        target,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(errno(format!(
        "mounting a fresh /proc on {}",
        target.display()
    )))
}

/// Refuses symlinks inside the rootfs where we mount: before pivot_root they would resolve against
/// the host's root.
fn no_symlink(p: &Path) -> ChildResult<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "{} is a symlink; tether mounts over it and refuses to follow links out of the root filesystem",
            p.display()
        )),
        _ => Ok(()),
    }
}

fn ensure_dir(p: &Path) -> ChildResult<()> {
    no_symlink(p)?;
    std::fs::create_dir_all(p).map_err(|e| format!("create {}: {e}", p.display()))
}

fn ensure_file(p: &Path) -> ChildResult<()> {
    no_symlink(p)?;
    if !p.exists() {
        std::fs::File::create(p).map_err(|e| format!("create {}: {e}", p.display()))?;
    }
    Ok(())
}

fn bind(src: &Path, dst: &Path, flags: MsFlags) -> ChildResult<()> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | flags,
        None::<&str>,
    )
    .map_err(errno(format!(
        "bind mount {} on {}",
        src.display(),
        dst.display()
    )))
}

fn setup_rootfs(root: &Path, etc_files: &[(PathBuf, String)]) -> ChildResult<()> {
    // pivot_root needs the new root to be a mount point.
    bind(root, root, MsFlags::MS_REC)?;
    let proc_dir = root.join("proc");
    ensure_dir(&proc_dir)?;
    mount_proc(&proc_dir)?;
    let sys = root.join("sys");
    ensure_dir(&sys)?;
    // sysfs can only be mounted by the owner of the network namespace; without it the container
    // simply has an empty /sys.
    if let Err(e) = mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        tracing::debug!(%e, "no sysfs in the container");
    }
    let dev = root.join("dev");
    ensure_dir(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(errno("mount tmpfs on /dev"))?;
    // Device nodes by bind mount: mknod is not allowed in a user namespace.
    for n in ["null", "zero", "full", "random", "urandom", "tty"] {
        let src = Path::new("/dev").join(n);
        if !src.exists() {
            continue;
        }
        let dst = dev.join(n);
        ensure_file(&dst)?;
        bind(&src, &dst, MsFlags::empty())?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, dev.join(name));
    }
    let shm = dev.join("shm");
    ensure_dir(&shm)?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(errno("mount tmpfs on /dev/shm"))?;
    let etc = root.join("etc");
    ensure_dir(&etc)?;
    for (src, name) in etc_files {
        let dst = etc.join(name);
        ensure_file(&dst)?;
        bind(src, &dst, MsFlags::empty())?;
    }
    nix::unistd::chdir(root).map_err(errno(format!("chdir {}", root.display())))?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only the new.
    nix::unistd::pivot_root(".", ".")
        .map_err(errno(format!("pivot_root into {}", root.display())))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(errno("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(errno("chdir /"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Waiting, with signals forwarded to the container.

static PENDING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn record_signal(sig: libc::c_int) {
    PENDING.fetch_or(1 << sig, std::sync::atomic::Ordering::SeqCst);
}

const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Catches the signals a foreground `tether run` forwards. No SA_RESTART, so `waitpid` returns
/// EINTR and the wait loop can forward them.
pub fn install_forwarding() {
    use nix::sys::signal::{SaFlags, SigAction, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(record_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in FORWARDED {
        // SAFETY: the handler only touches an atomic.
        let _ = unsafe { sigaction(s, &act) };
    }
}

/// Ignores the forwarded signals (the detached supervisor must outlive a stray SIGHUP).
pub fn ignore_forwarded() {
    for s in FORWARDED {
        // SAFETY: installing SIG_IGN is always sound.
        let _ = unsafe { signal(s, SigHandler::SigIgn) };
    }
}

/// Waits for `pid`, forwarding caught signals to it; returns a shell-style exit code.
pub fn wait_forwarding(pid: Pid) -> Result<i32> {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {
                let bits = PENDING.swap(0, std::sync::atomic::Ordering::SeqCst);
                for n in 1..64 {
                    if bits & (1 << n) != 0
                        && let Ok(s) = Signal::try_from(n)
                    {
                        let _ = kill(pid, s);
                    }
                }
            }
            Err(e) => return Err(e).ctx(format!("failed to wait for process {pid}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// exec: join a running container.

/// Namespace kinds in the order `exec` enters them: the user namespace late, so the ones owned by
/// the host's user namespace are still joinable, and the mount namespace last, because entering it
/// changes what `/proc` paths mean.
pub const JOIN_ORDER: [(&str, CloneFlags); 6] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

pub struct ExecSpec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub userns: bool,
}

/// Enters every namespace of `pid` that differs from ours, forks (so the PID namespace applies),
/// and runs the command; returns its exit code. Must be called from a single-threaded process.
pub fn exec_in(pid: i32, spec: &ExecSpec) -> Result<i32> {
    // Open everything first: after setns(mnt) `/proc/<pid>` would mean the container's /proc.
    let mut fds = Vec::new();
    for (kind, flag) in JOIN_ORDER {
        let theirs = format!("/proc/{pid}/ns/{kind}");
        let same = std::fs::read_link(&theirs).ok()
            == std::fs::read_link(format!("/proc/self/ns/{kind}")).ok();
        if same {
            continue;
        }
        let f = std::fs::File::open(&theirs).ctx(format!("failed to open {theirs}"))?;
        fds.push((kind, flag, OwnedFd::from(f)));
    }
    for (kind, flag, fd) in &fds {
        nix::sched::setns(fd, *flag)
            .ctx(format!("failed to join the container's {kind} namespace"))?;
    }
    // SAFETY: single-threaded; the child only execs or exits.
    match unsafe { nix::unistd::fork() }.ctx("fork")? {
        nix::unistd::ForkResult::Child => {
            let r: ChildResult<std::convert::Infallible> = (|| {
                reset_signals();
                if spec.userns {
                    nix::unistd::setgroups(&[]).map_err(errno("setgroups"))?;
                    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
                        .map_err(errno("setresgid"))?;
                    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
                        .map_err(errno("setresuid"))?;
                }
                nix::unistd::chdir(spec.workdir.as_str())
                    .map_err(errno(format!("workdir {}", spec.workdir)))?;
                let path_env = spec
                    .env
                    .iter()
                    .find_map(|e| e.strip_prefix("PATH="))
                    .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
                let prog = lookup(&spec.argv[0], path_env)?;
                let argv = cstrings(&spec.argv)?;
                let envp = cstrings(&spec.env)?;
                close_inherited_fds();
                let e = nix::unistd::execve(&prog, &argv, &envp).unwrap_err();
                Err(format!("exec {}: {e}", spec.argv[0]))
            })();
            let msg = match r {
                Ok(never) => match never {},
                Err(m) => m,
            };
            let code = if msg.contains("not found") || msg.contains("no such file") {
                127
            } else {
                126
            };
            let _ = writeln!(std::io::stderr(), "tether exec: {msg}");
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            install_forwarding();
            wait_forwarding(child)
        }
    }
}

/// The namespace identities of a process (`net:[4026531840]`), for `inspect`.
pub fn namespaces_of(pid: i32) -> std::collections::BTreeMap<String, String> {
    ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"]
        .iter()
        .filter_map(|k| {
            std::fs::read_link(format!("/proc/{pid}/ns/{k}"))
                .ok()
                .map(|l| (k.to_string(), l.display().to_string()))
        })
        .collect()
}
