//! Throwaway network namespaces for tests.
//!
//! A [`Netns`] is held by an open fd, not by a bind mount or a holder process: when the test ends (or
//! panics, or the runner is killed) the fd closes and the kernel frees the namespace with everything in
//! it. Nothing here ever changes the namespace of the calling thread: work inside a namespace runs on a
//! short-lived scoped thread or in a child process that entered it before exec.
//!
//! On top of [`Netns`]: [`TestHost`] (a fake host with temp dirs), [`Cni`] (run a plugin binary
//! inside a namespace), [`Snapshot`] (state before/after), [`EchoServer`] and friends (real
//! packets), [`Outside`] (a routed far end for NAT tests), [`CniHost`] (a container runtime running
//! conflists on the fake host).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use nix::sched::{CloneFlags, setns, unshare};

mod cni;
mod host;
mod no_iptables;
mod output;
mod outside;
mod packets;
mod runtime;
mod shared;
mod snapshot;

pub use cni::{Cni, CniOutput, result_ips};
pub use host::{TestHost, bin_dir, plugin, reference_plugin, require_privileges};
pub use no_iptables::iptables_programs;
pub use output::success_stdout;
pub use outside::Outside;
pub use packets::{EchoServer, ping, tcp_echo, udp_echo};
pub use runtime::{CniHost, conflist};
pub use shared::{FIREWALL_SHARED_CHAINS, PORTMAP_SHARED_CHAINS, is_masq_chain};
pub use snapshot::{Snapshot, assert_snapshot_eq};

/// A network namespace that lives exactly as long as this value.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    /// Creates a new, empty network namespace with `lo` up.
    pub fn new() -> io::Result<Netns> {
        let fd = std::thread::spawn(|| -> io::Result<OwnedFd> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "unshare(CLONE_NEWNET) failed: {e}; run the tests as root or under `unshare -rn`"
                    ),
                )
            })?;
            Ok(File::open("/proc/thread-self/ns/net")?.into())
        })
        .join()
        .expect("netns creation thread panicked")?;
        let ns = Netns { fd };
        let status = ns.command("ip").args(["link", "set", "lo", "up"]).status();
        // `ip` is only a convenience for bringing `lo` up; fall back to the sysfs-free ioctl path if
        // it is missing.
        if !matches!(status, Ok(s) if s.success()) {
            ns.run(set_lo_up)?;
        }
        Ok(ns)
    }

    /// A path to this namespace that any process of ours can open (`/proc/<pid>/fd/<n>`), usable as
    /// `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.fd.as_raw_fd()
        ))
    }

    /// A `Command` whose child enters this namespace before exec.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let raw = self.fd.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the fd stays open in the child until exec because we
        // hold it for the lifetime of `self` and do not mark it close-on-exec-before-fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = BorrowedFd::borrow_raw(raw);
                setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
            });
        }
        cmd
    }

    /// Runs `prog args` inside this namespace and returns its stdout; panics with its stderr
    /// unless it succeeds. (No shell is involved.)
    #[track_caller]
    pub fn sh(&self, prog: &str, args: &[&str]) -> String {
        let out = self
            .command(prog)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {prog}: {e}"));
        assert!(
            out.status.success(),
            "{prog} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -j ARGS` inside this namespace, parsed.
    #[track_caller]
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.sh("ip", &[&["-j"], args].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {out}"))
    }

    /// Runs `f` on a scoped thread that entered this namespace, and returns its value.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let fd = self.fd.as_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(fd, CloneFlags::CLONE_NEWNET).expect("setns into test namespace");
                f()
            })
            .join()
            .expect("thread inside namespace panicked")
        })
    }
}

impl Netns {
    /// A netlink handle acting in this namespace.
    #[track_caller]
    pub fn netlink(&self) -> tether_netlink::NsHandle {
        tether_netlink::NsHandle::for_netns(self.fd.as_fd())
            .unwrap_or_else(|e| panic!("netlink handle for test namespace: {e}"))
    }

    /// Waits until link `index` here is oper-up (`IF_OPER_UP`), polling netlink, for at most
    /// five seconds. A veth end that was just set up has its carrier, but the kernel activates
    /// its queueing (and reports it up) from asynchronous link-watch work: until that ran, what
    /// it sends is dropped, so fixtures wiring veths wait here before they return.
    #[track_caller]
    pub fn wait_oper_up(&self, index: u32) {
        let h = self.netlink();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            let link = h
                .link_by_index(index)
                .unwrap_or_else(|e| panic!("wait_oper_up: read link #{index}: {e}"))
                .unwrap_or_else(|| panic!("wait_oper_up: link #{index} vanished"));
            if link.oper_up {
                return;
            }
            if std::time::Instant::now() >= deadline {
                panic!(
                    "wait_oper_up: {} still not oper-up after 5 s: {link:?}",
                    link.name
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(20));
        }
    }

    /// A sysctl as seen inside this namespace (`net.ipv4.ip_forward` or `net/ipv4/...`).
    #[track_caller]
    pub fn sysctl(&self, key: &str) -> String {
        tether_netlink::sysctl_get(Some(self.fd.as_fd()), key)
            .unwrap_or_else(|e| panic!("sysctl {key} in test namespace: {e}"))
    }

    /// Sets a sysctl inside this namespace.
    #[track_caller]
    pub fn set_sysctl(&self, key: &str, value: &str) {
        tether_netlink::sysctl_set(Some(self.fd.as_fd()), key, value)
            .unwrap_or_else(|e| panic!("sysctl {key}={value} in test namespace: {e}"))
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn set_lo_up() -> io::Result<()> {
    // SIOCSIFFLAGS on a datagram socket: the same thing `ip link set lo up` does, without `ip`.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    let rc = unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) };
    let rc = if rc == 0 {
        unsafe {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(sock, libc::SIOCSIFFLAGS, &req)
        }
    } else {
        rc
    };
    let err = io::Error::last_os_error();
    unsafe { libc::close(sock) };
    if rc < 0 { Err(err) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_private_and_has_lo_up() {
        let ns = Netns::new().unwrap();
        let out = ns.command("ip").args(["-o", "link"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 1, "only lo expected: {text}");
        assert!(text.contains("lo:") && text.contains("UP"), "{text}");
        let mine = std::fs::read_link("/proc/self/ns/net").unwrap();
        let theirs = ns.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
        assert_ne!(mine, theirs);
    }
}
