//! One exec of a binary, timed from spawn to reaping, with the child's CPU time.
//!
//! The child is reaped with `wait4`, so its `rusage` comes with it (Linux counts the descendants
//! it waited for: a plugin's IPAM delegate and `iptables*` execs are included).
//!
//! Peak memory cannot be taken from the same exec: at `execve` the kernel folds the high-water
//! RSS of the pre-exec address space into the process's `ru_maxrss`, and for a child of this
//! harness that is a copy of the harness itself (tens of MiB once samples pile up). Peak memory
//! is therefore measured through [`RUSAGE_MODE`]: this binary re-executed as a tiny wrapper
//! (a fresh, small address space) that spawns the plugin, reaps it and writes its `ru_maxrss`.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub wall: Duration,
    /// Wall-clock (realtime) instants of spawn and reaping, to line up with the child's own
    /// log timestamps.
    pub spawned_at: std::time::SystemTime,
    pub reaped_at: std::time::SystemTime,
    /// Peak RSS, only when the exec went through the [`RUSAGE_MODE`] wrapper.
    pub peak_kib: Option<u64>,
    /// User + system CPU time of the child and its waited-for descendants.
    pub cpu: Duration,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    pub fn wall_ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3
    }

    /// A one-line description of a failure for the report.
    pub fn failure(&self) -> String {
        let text = if self.stdout.is_empty() {
            &self.stderr
        } else {
            &self.stdout
        };
        let text = String::from_utf8_lossy(text);
        let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        line.truncate(300);
        match self.code {
            Some(c) => format!("exit {c}: {line}"),
            None => format!("killed by signal: {line}"),
        }
    }
}

/// Spawns `cmd` with piped stdio, feeds `stdin`, collects both outputs and reaps it.
pub fn run(mut cmd: Command, stdin: &[u8]) -> io::Result<Outcome> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawned_at = std::time::SystemTime::now();
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    if let Some(mut si) = child.stdin.take() {
        // Configs are far below the pipe buffer; a plugin that exits without reading (VERSION)
        // only makes this a harmless EPIPE.
        let _ = si.write_all(stdin);
    }
    let (stdout, stderr) = drain(child.stdout.take(), child.stderr.take())?;
    let (status, usage) = wait4(pid)?;
    let wall = start.elapsed();
    let reaped_at = std::time::SystemTime::now();
    // `child` is dropped without waiting: wait4 already reaped it.
    drop(child);
    let code = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        None
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Outcome {
        code,
        stdout,
        stderr,
        wall,
        spawned_at,
        reaped_at,
        peak_kib: None,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
    })
}

/// Reads both pipes to EOF with poll, so a chatty stderr (debug logs) can never block the child
/// while we wait on stdout.
fn drain(
    out: Option<std::process::ChildStdout>,
    err: Option<std::process::ChildStderr>,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    /// (reader, its fd, what it said, still open)
    type Pipe = (Box<dyn Read>, i32, Vec<u8>, bool);
    let mut pipes: Vec<Pipe> = Vec::new();
    if let Some(o) = out {
        let fd = o.as_raw_fd();
        pipes.push((Box::new(o), fd, Vec::new(), true));
    }
    if let Some(e) = err {
        let fd = e.as_raw_fd();
        pipes.push((Box::new(e), fd, Vec::new(), true));
    }
    let mut buf = [0u8; 16384];
    while pipes.iter().any(|p| p.3) {
        let mut fds: Vec<libc::pollfd> = pipes
            .iter()
            .filter(|p| p.3)
            .map(|p| libc::pollfd {
                fd: p.1,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: fds is a valid array of pollfd for its length.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for pfd in fds.iter().filter(|f| f.revents != 0) {
            let p = pipes.iter_mut().find(|p| p.1 == pfd.fd).expect("polled fd");
            match p.0.read(&mut buf) {
                Ok(0) => p.3 = false,
                Ok(n) => p.2.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut it = pipes.into_iter().map(|p| p.2);
    Ok((it.next().unwrap_or_default(), it.next().unwrap_or_default()))
}

pub fn wait4(pid: libc::pid_t) -> io::Result<(libc::c_int, libc::rusage)> {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 writes both out-parameters.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            return Ok((status, usage));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// First argument that turns this binary into the peak-memory wrapper:
/// `tether-bench __rusage OUT -- PROG [ARGS..]` runs PROG with our stdio and environment, writes
/// its `ru_maxrss` (KiB) to OUT and exits with its status.
pub const RUSAGE_MODE: &str = "__rusage";

pub fn rusage_main(args: &[std::ffi::OsString]) -> i32 {
    let [out, dashdash, prog, rest @ ..] = args else {
        eprintln!("usage: tether-bench {RUSAGE_MODE} OUT -- PROG [ARGS..]");
        return 2;
    };
    if dashdash != "--" {
        eprintln!("usage: tether-bench {RUSAGE_MODE} OUT -- PROG [ARGS..]");
        return 2;
    }
    let child = match Command::new(prog).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{RUSAGE_MODE}: {}: {e}", prog.to_string_lossy());
            return 127;
        }
    };
    let (status, usage) = match wait4(child.id() as libc::pid_t) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{RUSAGE_MODE}: wait4: {e}");
            return 125;
        }
    };
    if let Err(e) = std::fs::write(out, format!("{}\n", usage.ru_maxrss)) {
        eprintln!("{RUSAGE_MODE}: {}: {e}", out.to_string_lossy());
        return 125;
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// `cmd` (a `Command` for [`RUSAGE_MODE`] built by the caller) run like [`run`], with the peak
/// RSS the wrapper wrote to `out`.
pub fn run_measured(cmd: Command, stdin: &[u8], out: &std::path::Path) -> io::Result<Outcome> {
    let _ = std::fs::remove_file(out);
    let mut o = run(cmd, stdin)?;
    o.peak_kib = std::fs::read_to_string(out)
        .ok()
        .and_then(|t| t.trim().parse().ok());
    Ok(o)
}

/// The arguments that make `self_exe` wrap `prog`.
pub fn wrap_args(out: &std::path::Path, prog: &std::path::Path) -> Vec<std::ffi::OsString> {
    vec![RUSAGE_MODE.into(), out.into(), "--".into(), prog.into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_outputs_status_and_usage() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "cat; echo err >&2; head -c 200000 /dev/zero >&2; exit 3",
        ]);
        let o = run(cmd, b"hello").unwrap();
        assert_eq!(o.code, Some(3));
        assert_eq!(o.stdout, b"hello");
        assert_eq!(o.stderr.len(), 4 + 200000);
        assert!(o.wall > Duration::ZERO);
    }
}
