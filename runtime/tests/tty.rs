//! `-i` and `-t` for real: each test is a terminal. It opens a pty pair itself, gives the slave
//! to `tether` as its stdin, stdout, stderr and controlling terminal (a new session, as a login
//! shell would), then types on the master and reads what comes back.
//!
//! ```text
//! test ── master ══ slave ── tether (raw mode) ── master' ══ slave' ── busybox sh (container)
//!  types "echo hi\r", reads "hi"     ioctl TIOCSWINSZ → SIGWINCH → tether → TIOCSWINSZ(master')
//! ```

mod common;
use common::*;
use nix::pty::Winsize;
use nix::sys::termios::{Termios, tcgetattr};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const SHORT: Duration = Duration::from_secs(10);

/// A busybox root with the applets these tests type.
fn rootfs(env: &Env) -> PathBuf {
    let root = busybox_rootfs(env.host.dir());
    std::os::unix::fs::symlink("busybox", root.join("bin/stty")).unwrap();
    // Mount points made by host root: with --userns the container's root may not write here.
    for d in ["proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["hosts", "hostname", "resolv.conf"] {
        std::fs::write(root.join("etc").join(f), "").unwrap();
    }
    root
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A pty pair opened close-on-exec: tests run in parallel, and a `tether` another test spawns
/// must not inherit this test's master (the terminal would never hang up).
fn open_pty_cloexec(ws: &Winsize) -> nix::pty::OpenptyResult {
    use nix::fcntl::OFlag;
    let m = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).unwrap();
    nix::pty::grantpt(&m).unwrap();
    nix::pty::unlockpt(&m).unwrap();
    let name = nix::pty::ptsname_r(&m).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(name)
        .unwrap();
    // SAFETY: TIOCSWINSZ reads a winsize.
    assert_eq!(
        unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, ws) },
        0
    );
    // SAFETY: the master's fd, owned by `m`, is handed over to the OwnedFd.
    let master = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(m.into_raw_fd()) };
    nix::pty::OpenptyResult {
        master,
        slave: slave.into(),
    }
}

/// `tether ARGS` on a terminal of the test's own.
struct Term {
    master: std::fs::File,
    slave: OwnedFd,
    child: Child,
    /// The terminal's mode before tether started, to be found again after it exits.
    before: Termios,
    seen: Vec<u8>,
    /// Where the next `expect` starts looking.
    cursor: usize,
}

impl Term {
    fn start(env: &Env, args: &[&str]) -> Term {
        let pty = open_pty_cloexec(&winsize(24, 80));
        let before = tcgetattr(&pty.slave).unwrap();
        let mut cmd = env.cmd();
        cmd.args(args);
        let fd = |f: &OwnedFd| Stdio::from(f.try_clone().unwrap());
        cmd.stdin(fd(&pty.slave))
            .stdout(fd(&pty.slave))
            .stderr(fd(&pty.slave));
        // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the slave by now.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn tether");
        let master = std::fs::File::from(pty.master);
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        Term {
            master,
            slave: pty.slave,
            child,
            before,
            seen: Vec::new(),
            cursor: 0,
        }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Reads until `needle` appears after the previous match (at most `SHORT`).
    #[track_caller]
    fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + SHORT;
        loop {
            let tail = &self.seen[self.cursor..];
            if let Some(i) = tail
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                self.cursor += i + needle.len();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle:?} on the terminal within {SHORT:?}; it shows:\n{}",
                self.output()
            );
            let mut fds = [nix::poll::PollFd::new(
                self.master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u8));
            self.read_some();
        }
    }

    /// Whatever the master has now (it is non-blocking), appended to `seen`.
    fn read_some(&mut self) {
        let mut buf = [0u8; 4096];
        if let Ok(n) = nix::unistd::read(&self.master, &mut buf) {
            self.seen.extend_from_slice(&buf[..n]);
        }
    }

    fn type_(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }

    /// A shell command, and its output (the typed line echoes, so the needle must differ from it).
    #[track_caller]
    fn run(&mut self, line: &str, output: &str) {
        self.type_(line);
        self.type_("\r");
        self.expect(output);
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // The kernel sends SIGWINCH to the terminal's foreground process group: tether's.
        // SAFETY: TIOCSWINSZ reads a winsize.
        assert_eq!(
            unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
            0
        );
    }

    /// Closes the terminal (the window is gone): the slave side hangs up.
    fn hang_up(&mut self) {
        let devnull = std::fs::File::open("/dev/null").unwrap();
        // The master's fd number now refers to /dev/null: the pty's only master is closed.
        // SAFETY: dup2 onto an fd this struct owns; it stays open (as /dev/null) until dropped.
        assert!(unsafe { libc::dup2(devnull.as_raw_fd(), self.master.as_raw_fd()) } >= 0);
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for tether to exit (the test's own child); its exit code.
    #[track_caller]
    fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + SHORT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().expect("tether exited, not killed");
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "tether did not exit; the terminal shows:\n{}",
                    self.output()
                );
            }
            self.read_some();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[track_caller]
    fn assert_mode_restored(&self) {
        let after = tcgetattr(&self.slave).unwrap();
        assert_eq!(
            after, self.before,
            "tether left the terminal in another mode"
        );
    }
}

/// `tether run FLAGS --net=none --rootfs ROOT -- CMD` on a terminal of the test's own.
fn run_on_term(env: &Env, root: &Path, flags: &[&str], cmd: &[&str]) -> Term {
    let r = root.display().to_string();
    let mut args = vec!["run"];
    args.extend_from_slice(flags);
    args.extend(["--net=none", "--rootfs", &r, "--"]);
    args.extend_from_slice(cmd);
    Term::start(env, &args)
}

impl Drop for Term {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Type a command, resize, ^C a `sleep 100`, `exit 3`: the session every test below drives.
fn interactive_session(t: &mut Term) {
    t.expect("# ");
    t.run("echo hel''lo tty", "hello tty");
    t.run("stty size", "24 80");
    t.resize(40, 100);
    t.run("stty size", "40 100");
    // ^C while `sleep` is the terminal's foreground process: it dies, the shell does not.
    t.run("echo sle''eping; sleep 100", "sleeping");
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    t.type_("\x03");
    t.run("echo ali''ve $((1+1))", "alive 2");
    assert!(t0.elapsed() < SHORT, "^C did not interrupt sleep");
    assert!(t.still_running(), "^C reached tether");
    t.type_("exit 3\r");
    assert_eq!(t.exit_code(), 3, "the terminal shows:\n{}", t.output());
    t.assert_mode_restored();
}

#[test]
fn run_it_gives_the_shell_a_terminal_and_returns_its_exit_code() {
    require_plugins(&["none"]);
    let env = Env::new();
    let root = rootfs(&env);
    let mut t = run_on_term(&env, &root, &["--rm", "-it"], &["sh"]);
    t.expect("# ");
    // The controlling terminal: /dev/console is it too.
    t.run(
        "test -t 0 && test -t 1 && echo std''io-is-a-tty",
        "stdio-is-a-tty",
    );
    t.run("echo con''sole-ok > /dev/console", "console-ok");
    interactive_session(&mut t);
    env.assert_clean();
}

#[test]
fn exec_it_gives_the_command_a_terminal_of_its_own() {
    require_plugins(&["none"]);
    let env = Env::new();
    let root = rootfs(&env);
    let r = root.display().to_string();
    env.run_detached("box", &["--net=none", "--rootfs", &r], &["sleep", "1000"]);
    let mut t = Term::start(&env, &["exec", "-it", "box", "sh"]);
    t.expect("# ");
    t.run("test -t 0 && echo std''in-is-a-tty", "stdin-is-a-tty");
    interactive_session(&mut t);
    // The container was not touched by the session's end.
    assert_eq!(env.inspect("box")["state"]["status"], "running");
    env.tether(&["rm", "-f", "box"]).ok();
    env.assert_clean();
}

#[test]
fn the_terminal_is_restored_when_the_container_is_killed_or_tether_is_told_to_stop() {
    require_plugins(&["none"]);
    let env = Env::new();
    let root = rootfs(&env);
    // Killed from outside: the session ends with 137.
    let mut t = run_on_term(&env, &root, &["-it", "--name", "k"], &["sh"]);
    t.expect("# ");
    env.tether(&["kill", "k"]).ok();
    assert_eq!(t.exit_code(), 137);
    t.assert_mode_restored();
    env.tether(&["rm", "k"]).ok();
    // SIGTERM to tether: forwarded to the container, whose trap exits 7.
    let mut t = run_on_term(
        &env,
        &root,
        &["--rm", "-it"],
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; echo trap''ped; while :; do sleep 0.1; done",
        ],
    );
    t.expect("trapped");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(t.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(t.exit_code(), 7);
    t.assert_mode_restored();
    env.assert_clean();
}

#[test]
fn detached_tty_output_goes_to_the_log() {
    require_plugins(&["none"]);
    let env = Env::new();
    let root = rootfs(&env);
    let r = root.display().to_string();
    env.run_detached(
        "logged",
        &["-t", "--net=none", "--rootfs", &r],
        &[
            "sh",
            "-c",
            "test -t 1 && echo out-on-a-tty; echo last-line; exit 4",
        ],
    );
    assert!(
        wait_for(SHORT, || env.inspect("logged")["state"]["status"]
            == "exited"),
        "{}",
        env.inspect("logged")
    );
    let st = env.inspect("logged");
    assert_eq!(st["state"]["exitCode"], 4);
    assert_eq!(st["config"]["tty"], true);
    let logs = env.tether(&["logs", "logged"]);
    // The pty's line discipline ends lines with \r\n, as in Docker's logs of a -t container.
    assert!(logs.ok().contains("out-on-a-tty\r\n"), "{logs:#?}");
    // The last line before the exit made it too: the master is drained after the exit.
    assert!(logs.stdout.ends_with("\r\nlast-line\r\n"), "{logs:#?}");
    env.tether(&["rm", "logged"]).ok();
    env.assert_clean();
}

#[test]
fn stdin_is_open_only_with_i_and_it_needs_a_terminal() {
    require_plugins(&["none"]);
    let env = Env::new();
    let input = env.host.dir().join("input");
    std::fs::write(&input, "typed-in\n").unwrap();
    let with_stdin = |args: &[&str]| {
        let mut c = env.cmd();
        c.args(args).stdin(std::fs::File::open(&input).unwrap());
        run_with_timeout(c, SHORT)
    };
    // Without -i the container reads /dev/null, as under Docker.
    let r = with_stdin(&["run", "--rm", "--net=none", "--", "cat"]);
    assert_eq!(r.ok(), "");
    let r = with_stdin(&["run", "--rm", "-i", "--net=none", "--", "cat"]);
    assert_eq!(r.ok(), "typed-in\n");
    // -it on a file: Docker's refusal, exit 1, nothing made.
    let r = with_stdin(&["run", "--rm", "-it", "--net=none", "--", "cat"]);
    assert_eq!(r.code, Some(1));
    r.fails_with("the input device is not a TTY");
    assert_eq!(env.state_entries(), Vec::<String>::new());
    // -t alone works without a terminal: the container still gets one.
    let r = with_stdin(&[
        "run",
        "--rm",
        "-t",
        "--net=none",
        "--",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo on-a-tty",
    ]);
    assert_eq!(r.ok(), "on-a-tty\r\n");
    env.assert_clean();
}

#[test]
fn run_it_works_in_a_user_namespace() {
    require_plugins(&["none"]);
    let env = Env::new();
    let root = rootfs(&env);
    let mut t = run_on_term(&env, &root, &["--rm", "-it", "--userns"], &["sh"]);
    t.expect("# ");
    t.run("echo u''id=$(id -u)", "uid=0");
    // The container's root owns its terminal, as under Docker.
    t.run("echo con''sole-ok > /dev/console", "console-ok");
    t.run("stty size", "24 80");
    t.type_("exit 5\r");
    assert_eq!(t.exit_code(), 5, "the terminal shows:\n{}", t.output());
    t.assert_mode_restored();
    env.assert_clean();
}

#[test]
fn a_hung_up_terminal_hangs_up_the_containers_and_tether_exits() {
    require_plugins(&["none"]);
    let env = Env::new();
    let root = rootfs(&env);
    let mut t = run_on_term(&env, &root, &["--rm", "-it"], &["sh"]);
    t.expect("# ");
    t.run("echo rea''dy", "ready");
    t.hang_up();
    // The shell reads EOF on its own hung-up terminal and exits; tether follows and cleans up.
    t.exit_code();
    env.assert_clean();
}
