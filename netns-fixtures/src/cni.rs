//! Running a CNI plugin binary inside a namespace, with exactly the environment a test chooses.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Netns;

/// `PATH` is the only variable a plugin inherits (reference plugins exec iptables and friends).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What one plugin run produced.
#[derive(Debug, Clone)]
pub struct CniOutput {
    /// Exit code; -1 when killed by a signal or after the timeout.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl CniOutput {
    /// stdout as JSON: `Null` when empty; panics unless it is exactly one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        if self.stdout.trim().is_empty() {
            return Value::Null;
        }
        // from_str rejects trailing garbage, so a log line on stdout fails here.
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not exactly one JSON document ({e}):\n{self}"))
    }

    /// The result of a successful run; panics with stdout and stderr unless the exit code is 0.
    #[track_caller]
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 0, "plugin failed:\n{self}");
        self.json()
    }

    /// Asserts success and an empty stdout (DEL, CHECK, GC, STATUS).
    #[track_caller]
    pub fn ok_empty(&self) {
        assert_eq!(self.status, 0, "plugin failed:\n{self}");
        assert!(self.stdout.trim().is_empty(), "expected no output:\n{self}");
    }

    /// The CNI error code of a failed run (`None` when it succeeded or printed no error object).
    pub fn err_code(&self) -> Option<u64> {
        if self.status == 0 {
            return None;
        }
        serde_json::from_str::<Value>(&self.stdout)
            .ok()?
            .get("code")?
            .as_u64()
    }
}

impl std::fmt::Display for CniOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit status: {}{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            if self.timed_out { " (timed out)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

/// The addresses of a CNI result (1.x `ips[].address`), without their prefix lengths.
#[track_caller]
pub fn result_ips(result: &Value) -> Vec<std::net::IpAddr> {
    result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips in {result}"))
        .iter()
        .map(|i| {
            let a = i["address"].as_str().unwrap();
            a.split('/').next().unwrap().parse().unwrap()
        })
        .collect()
}

/// One plugin invocation, built up and then [`run`](Cni::run) inside a namespace.
#[must_use]
pub struct Cni<'a> {
    ns: &'a Netns,
    binary: PathBuf,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Netns {
    /// A CNI invocation of `plugin` that runs inside this namespace (the fake host).
    pub fn cni(&self, plugin: impl AsRef<Path>) -> Cni<'_> {
        Cni {
            ns: self,
            binary: plugin.as_ref().to_path_buf(),
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(20),
        }
    }
}

impl<'a> Cni<'a> {
    /// Sets (or replaces) an environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((
            key.to_string(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
        self
    }

    /// Removes a variable set earlier.
    pub fn unset(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    pub fn command(self, cmd: &str) -> Self {
        self.env("CNI_COMMAND", cmd)
    }

    pub fn container_id(self, id: &str) -> Self {
        self.env("CNI_CONTAINERID", id)
    }

    pub fn netns(self, path: impl AsRef<Path>) -> Self {
        self.env("CNI_NETNS", path.as_ref())
    }

    pub fn ifname(self, name: &str) -> Self {
        self.env("CNI_IFNAME", name)
    }

    /// `CNI_PATH`, the directories joined with `:`.
    pub fn cni_path<P: AsRef<Path>>(self, dirs: impl IntoIterator<Item = P>) -> Self {
        let joined: Vec<String> = dirs
            .into_iter()
            .map(|d| d.as_ref().display().to_string())
            .collect();
        self.env("CNI_PATH", joined.join(":"))
    }

    /// `CNI_ARGS`, e.g. `"IgnoreUnknown=1;K8S_POD_NAME=x"`.
    pub fn args(self, args: &str) -> Self {
        self.env("CNI_ARGS", args)
    }

    /// The config on stdin: a `&str`, `String` or `serde_json::Value`.
    pub fn stdin(mut self, conf: impl std::fmt::Display) -> Self {
        self.stdin = Some(conf.to_string().into_bytes());
        self
    }

    pub fn stdin_bytes(mut self, bytes: &[u8]) -> Self {
        self.stdin = Some(bytes.to_vec());
        self
    }

    /// Overrides the default 20 s timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Runs the plugin inside the namespace with an empty environment plus `PATH` and whatever
    /// was set on this builder. A run that outlives the timeout is killed (by its own pid) and
    /// reported with `timed_out` and status -1.
    #[track_caller]
    pub fn run(self) -> CniOutput {
        let mut cmd = self.ns.command(&self.binary);
        cmd.env_clear()
            .env("PATH", PATH)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A script written by a test can be briefly "busy" (ETXTBSY) while another test thread
        // forks with its write fd still inherited; that clears as soon as that child execs.
        let mut attempts = 0;
        let mut child = loop {
            match cmd.spawn() {
                Ok(c) => break c,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("spawn {}: {e}", self.binary.display()),
            }
        };
        // Writer and readers on their own threads, so that no full pipe can deadlock the run.
        let input = self.stdin.clone();
        let mut pipe_in = child.stdin.take();
        let writer = std::thread::spawn(move || {
            if let (Some(data), Some(pipe)) = (input, pipe_in.as_mut()) {
                // A plugin may exit without reading stdin; EPIPE is not our failure.
                let _ = pipe.write_all(&data);
            }
        });
        let reader = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = reader(Box::new(child.stdout.take().expect("stdout pipe")));
        let err = reader(Box::new(child.stderr.take().expect("stderr pipe")));

        let deadline = Instant::now() + self.timeout;
        let mut timed_out = false;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait for plugin") {
                break st;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                // Child::kill signals exactly this child's pid.
                let _ = child.kill();
                break child.wait().expect("wait for killed plugin");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        writer.join().expect("stdin writer");
        let stdout = out.join().expect("stdout reader");
        let mut stderr = err.join().expect("stderr reader");
        if timed_out {
            stderr.push_str(&format!(
                "\n[netns-fixtures] {} timed out after {:?} and was killed",
                self.binary.display(),
                self.timeout
            ));
        }
        CniOutput {
            status: if timed_out {
                -1
            } else {
                status.code().unwrap_or(-1)
            },
            stdout,
            stderr,
            timed_out,
        }
    }
}
