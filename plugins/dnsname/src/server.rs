//! Supervising the network's DNS server: start it detached, know whether it runs (its pid file,
//! checked against `/proc/<pid>/cmdline`, never a search by name), ask it to reload, stop it.
//!
//! ```text
//!  spawn: tether-dns --dir <netdir>      setsid, cwd /, stdin /dev/null,
//!         stdout ─pipe─► plugin reads one line: "ready" | "error: <why>" (5 s at most)
//!         stderr ──────► <netdir>/server.log
//!         then the plugin writes <netdir>/server.pid and exits; the server is re-parented
//!  alive: /proc/<pid>/cmdline is exactly [_, "--dir", <netdir>] (a reused pid or a zombie
//!         is not ours)
//!  reload/ping: one line on <netdir>/control.sock, answer "ok <entries>"
//!  stop:  SIGTERM, wait for it to go (2 s), then SIGKILL
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cni::{Error, Request};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tether_dns_state::{NetDir, SERVER_BIN, ServerConfig};
use tether_kit::Error as KitError;

use crate::state::state_err;

const READY_TIMEOUT: Duration = Duration::from_secs(5);
const CONTROL_TIMEOUT: Duration = Duration::from_secs(3);
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// `tether-dns` in `CNI_PATH`, else beside this plugin's binary.
pub fn binary(req: &Request) -> Result<PathBuf, Error> {
    let mut dirs = req.path.clone();
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(d);
    }
    dirs.iter()
        .map(|d| d.join(SERVER_BIN))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            KitError::Config(format!(
                "the DNS server {SERVER_BIN} is in neither CNI_PATH nor beside the plugin"
            ))
            .into()
        })
}

/// The server's pid, if the one the pid file names is alive and serves `dir`.
pub fn running(dir: &NetDir) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let want = dir.path();
    let ours =
        args.len() >= 3 && args[1] == b"--dir" && args[2] == want.as_os_str().as_encoded_bytes();
    ours.then_some(pid)
}

/// Starts the server for `dir` (whose server.json and records.json are written) and waits until
/// its sockets are bound. Its failure to bind (port 53 taken) is the error returned.
pub fn spawn(dir: &NetDir, bin: &Path) -> Result<i32, Error> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.log())
        .map_err(tether_kit::errors::io(format!(
            "open {}",
            dir.log().display()
        )))?;
    let mut cmd = Command::new(bin);
    cmd.arg("--dir")
        .arg(dir.path())
        .current_dir("/")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    for k in ["PATH", "TETHER_LOG"] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    // SAFETY: setsid is async-signal-safe; it detaches the server from our session, so the
    // runtime's terminal or process group signals do not reach it.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| KitError::Server(format!("start {}: {e}", bin.display())))?;
    let pid = child.id() as i32;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(READY_TIMEOUT).unwrap_or_default();
    if line.trim() == tether_dns_state::READY {
        tether_dns_state::write_atomic(&dir.pid_file(), format!("{pid}\n").as_bytes())
            .map_err(state_err)?;
        tracing::debug!(pid, "phase: DNS server ready");
        // Not waited for: it outlives this plugin, re-parented to init (or a subreaper).
        drop(child);
        return Ok(pid);
    }
    let _ = child.kill();
    let _ = child.wait();
    let why = match line.trim().strip_prefix("error: ") {
        Some(w) => w.to_string(),
        None if line.is_empty() => {
            let mut tail = String::new();
            let _ = std::fs::File::open(dir.log()).and_then(|mut f| f.read_to_string(&mut tail));
            format!(
                "it did not report ready within {READY_TIMEOUT:?}; its log: {}",
                tail.lines().last().unwrap_or("")
            )
        }
        None => line.trim().to_string(),
    };
    Err(KitError::Server(format!(
        "the DNS server of network {:?} could not start: {why}",
        dir.network
    ))
    .into())
}

/// Makes sure a server with `config` serves `dir`'s current records: reload a running one with
/// the same config, restart one with another config (the gateways changed), start one when none
/// runs (first ADD, or after a crash or SIGKILL).
pub fn ensure(dir: &NetDir, config: &ServerConfig, bin: &Path) -> Result<(), Error> {
    let current: Option<ServerConfig> =
        tether_dns_state::read_json(&dir.server_config()).unwrap_or(None);
    if running(dir).is_some() {
        if current.as_ref() == Some(config) {
            match control(dir, "reload") {
                Ok(_) => return Ok(()),
                // Alive but not answering: replace it.
                Err(e) => tracing::warn!("DNS server does not answer ({e}); restarting it"),
            }
        }
        stop(dir);
    }
    tether_dns_state::write_json(&dir.server_config(), config).map_err(state_err)?;
    spawn(dir, bin).map(|_| ())
}

/// One request on the control socket; the number of entries the server serves.
pub fn control(dir: &NetDir, request: &str) -> Result<usize, String> {
    let path = dir.control();
    let mut s = UnixStream::connect(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    s.set_read_timeout(Some(CONTROL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(CONTROL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    match line.trim().strip_prefix("ok ") {
        Some(n) => n.parse().map_err(|_| format!("bad answer {line:?}")),
        None => Err(format!("answer {:?}", line.trim())),
    }
}

/// Stops the server of `dir` if it runs (SIGTERM, then SIGKILL after 2 s) and removes its pid
/// file. Idempotent.
pub fn stop(dir: &NetDir) {
    if let Some(pid) = running(dir) {
        let p = Pid::from_raw(pid);
        let _ = kill(p, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while running(dir).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if running(dir).is_some() {
            let _ = kill(p, Signal::SIGKILL);
        }
    }
    let _ = std::fs::remove_file(dir.pid_file());
}
