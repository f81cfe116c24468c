//! A host without iptables, for one thread: its own mount namespace in which every iptables
//! program is a failing one, so the plugins it spawns see a host whose iptables does not work
//! (what RHEL-like hosts without the iptables package, or with a broken one, look like).
//!
//! ```text
//!   test thread ── spawns ──> scoped thread: setns(host netns)
//!                                           unshare(CLONE_NEWNS), mount --make-rprivate /
//!                                           mount --bind /usr/bin/false /usr/sbin/iptables…
//!                                           f()  ── exec ──> plugin (sees no iptables)
//!   test thread itself: the real mount namespace, so `iptables-save` still reads the state
//! ```
//!
//! The mount namespace belongs to that thread (unshare gives it its own fs struct) and to the
//! processes it spawns; it goes away with them, and the real mounts are never touched.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

use crate::Netns;

/// The program bound over the iptables ones: it always exits 1.
const FAILING: &str = "/usr/bin/false";

/// Every iptables program a plugin could run (the `iptables*`/`ip6tables*` front ends, their
/// `-save`/`-restore`/`-legacy`/`-nft` variants, and the multi-call binaries behind them).
pub fn iptables_programs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with("iptables")
                || name.starts_with("ip6tables")
                || (name.starts_with("xtables-") && name.ends_with("-multi"));
            if ours {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Hides iptables in the calling thread's (new, private) mount namespace. Only for a thread of
/// its own: see [`Netns::run_without_iptables`].
fn hide_iptables_here() {
    unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS) on the test thread");
    // Private, so that nothing bound here propagates back to the real mount namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / private in the test's mount namespace");
    let programs = iptables_programs();
    assert!(!programs.is_empty(), "no iptables program to hide");
    for p in &programs {
        // Binding follows symlinks: an alternatives link hides the binary it points to.
        mount(
            Some(Path::new(FAILING)),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("bind {FAILING} over {}: {e}", p.display()));
    }
    let works = std::process::Command::new("iptables")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(!works, "iptables still works after hiding it");
}

impl Netns {
    /// [`Netns::run`], in a mount namespace of its own where every iptables program fails
    /// ([`iptables_programs`], each with `/usr/bin/false` bound over it): `f` and everything it
    /// spawns see a host without a working iptables; the rest of the test does not.
    pub fn run_without_iptables<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let fd = self.as_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(fd, CloneFlags::CLONE_NEWNET).expect("setns into test namespace");
                hide_iptables_here();
                f()
            })
            .join()
            .expect("thread inside namespace panicked")
        })
    }
}
