//! The pseudo-terminal pair: opened by tether on the host's `/dev/ptmx` (before any namespace is
//! entered, so a container without devpts still gets one), the master kept by tether, the slave
//! handed to the container's process, which makes it its controlling terminal.

use crate::error::{Context, Result};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::pty::Winsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// A pty pair; the slave is closed in tether once the container's process holds it.
pub struct Pty {
    pub master: OwnedFd,
    slave: Option<OwnedFd>,
}

impl Pty {
    /// Opens a pair sized like tether's terminal (when it has one). `owner`: the host uid of the
    /// container's root (`--userns`), given the slave, so that root inside can open its own
    /// terminal by name (`/dev/console`), as it could under Docker.
    pub fn open(owner: Option<u32>) -> Result<Pty> {
        let size = host_winsize();
        let p = nix::pty::openpty(size.as_ref(), None).ctx("failed to open a pseudo-terminal")?;
        if let Some(id) = owner {
            let id = Some(nix::unistd::Uid::from_raw(id));
            nix::unistd::fchown(
                &p.slave,
                id,
                id.map(|u| nix::unistd::Gid::from_raw(u.as_raw())),
            )
            .ctx("failed to give the pseudo-terminal to the container's root")?;
        }
        for fd in [&p.master, &p.slave] {
            // The container's process gets the slave as fd 0-2 (dup2 clears the flag); nothing
            // exec'd may inherit either end otherwise.
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).ctx("fcntl on the pty")?;
        }
        Ok(Pty {
            master: p.master,
            slave: Some(p.slave),
        })
    }

    /// The slave, for the process about to be cloned or forked.
    pub fn slave_fd(&self) -> Option<RawFd> {
        self.slave.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Closes tether's copy of the slave: from now on only the container holds it, so the master
    /// reads EIO once the container's last process is gone.
    pub fn close_slave(&mut self) {
        self.slave = None;
    }
}

/// The window size of tether's terminal: stdin's, else stdout's (as Docker's client).
pub fn host_winsize() -> Option<Winsize> {
    [libc::STDIN_FILENO, libc::STDOUT_FILENO]
        .into_iter()
        .find_map(|fd| {
            let mut ws: Winsize = unsafe { std::mem::zeroed() };
            // SAFETY: TIOCGWINSZ fills a winsize; a non-terminal fd fails with ENOTTY.
            let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
            (rc == 0 && ws.ws_row > 0).then_some(ws)
        })
}

/// Sets the pty's window size (on the master): the kernel sends SIGWINCH to the foreground
/// process group of the slave's session when it changes.
pub fn set_winsize(master: BorrowedFd<'_>, ws: &Winsize) {
    // SAFETY: TIOCSWINSZ reads a winsize.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, ws as *const Winsize) };
}

/// In the container's process, before exec: a new session whose controlling terminal is the
/// slave, which becomes stdin, stdout and stderr. Async-signal-safe calls only (it runs between
/// clone/fork and exec).
pub fn make_controlling(slave: RawFd) -> nix::Result<()> {
    nix::unistd::setsid()?;
    // SAFETY: TIOCSCTTY with 0: take the terminal only if no other session has it (a new pty).
    if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: the slave stays open in this process until exec (tether closes its copy only
    // after the clone or fork).
    let s = unsafe { BorrowedFd::borrow_raw(slave) };
    nix::unistd::dup2_stdin(s)?;
    nix::unistd::dup2_stdout(s)?;
    nix::unistd::dup2_stderr(s)?;
    Ok(())
}

/// Without `-i`: the container reads EOF, as under Docker.
pub fn stdin_to_null() -> std::io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2_stdin(null.as_fd())?;
    Ok(())
}

/// `open_tree(2)` flags and `move_mount(2)`'s (libc has the syscall numbers only).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// HOOK for the container's own `/dev` (a tmpfs), step 1, before `pivot_root`: a detached copy
/// of the pty slave's mount (the slave is fd 0 by now). After `pivot_root` the host's devpts is
/// out of the mount tree and can no longer be a bind source; a detached copy still can. It is
/// cloned by path (`/dev/pts/N` in this namespace's copy of the host's mounts): fd 0 itself
/// points into tether's mount namespace, which open_tree refuses.
pub fn clone_console() -> std::result::Result<OwnedFd, String> {
    let what = "copying the terminal's mount for /dev/console";
    let path = std::fs::read_link("/proc/self/fd/0").map_err(|e| format!("{what}: {e}"))?;
    let same = nix::sys::stat::fstat(std::io::stdin())
        .ok()
        .zip(nix::sys::stat::stat(&path).ok())
        .is_some_and(|(a, b)| a.st_rdev == b.st_rdev);
    if !same {
        return Err(format!(
            "{what}: {} is not the terminal in this mount namespace",
            path.display()
        ));
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| format!("{what}: {e}"))?;
    // SAFETY: open_tree on a path returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(format!("{what}: {}", nix::errno::Errno::last()));
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
}

/// Step 2, after `pivot_root`: `/dev/console` is the pty slave, as under Docker and runc. Whatever
/// `/dev` setup made `/dev/console` (an empty file, or a node), the mount goes on top of it.
pub fn attach_console(tree: OwnedFd) -> std::result::Result<(), String> {
    let console = std::path::Path::new("/dev/console");
    if std::fs::symlink_metadata(console).is_err() {
        std::fs::File::create(console).map_err(|e| format!("create /dev/console: {e}"))?;
    }
    // SAFETY: move_mount of a detached tree (an fd we own) onto a path; returns 0 or -1.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c"/dev/console".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(format!(
            "mounting the terminal on /dev/console: {}",
            nix::errno::Errno::last()
        ));
    }
    Ok(())
}
