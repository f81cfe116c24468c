//! The plugin side of the protocol: read, validate, dispatch, print one JSON document.

use crate::error::{Error, ErrorCode};
use crate::netns::check_netns_path;
use crate::request::{Command, Request};
use crate::result::CniResult;
use crate::types::Attachment;
use crate::version;
use serde_json::json;
use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What a plugin implements. Every method gets a validated [`Request`].
pub trait Plugin {
    /// The binary name (the CNI `type`), for the about text and logs.
    fn name(&self) -> &'static str;

    /// Spec versions this plugin accepts in configs.
    fn versions(&self) -> &'static [&'static str] {
        version::ALL
    }

    /// `CNI_ARGS` keys the plugin understands; others are ignored with a warning on stderr.
    fn known_args(&self) -> &'static [&'static str] {
        &[]
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error>;
    fn del(&self, req: &Request) -> Result<(), Error>;

    fn check(&self, _req: &Request) -> Result<(), Error> {
        Ok(())
    }

    fn status(&self, _req: &Request) -> Result<(), Error> {
        Ok(())
    }

    /// Remove everything this plugin owns for the network that is not in `valid`.
    fn gc(&self, _req: &Request, _valid: &[Attachment]) -> Result<(), Error> {
        Ok(())
    }
}

/// What one invocation produced: the text for stdout (possibly empty), for stderr (the about
/// text), and the exit code.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

/// Runs the plugin as a process: reads the real environment and stdin, prints, exits.
pub fn run<P: Plugin>(plugin: &P) -> ! {
    crate::logging::init();
    let command = std::env::var("CNI_COMMAND").ok();
    let mut stdin = Vec::new();
    // VERSION and the about text never need stdin; do not block on a terminal for them.
    if !matches!(command.as_deref(), None | Some("") | Some("VERSION")) {
        let _ = std::io::stdin().read_to_end(&mut stdin);
    }
    let outcome = dispatch(plugin, &|k| std::env::var(k).ok(), stdin);
    if !outcome.stderr.is_empty() {
        let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    }
    if !outcome.stdout.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(outcome.stdout.as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
    std::process::exit(outcome.exit_code)
}

/// The whole protocol, testable in-process. A panic inside the plugin becomes a CNI error
/// (code 999); its message and backtrace go to stderr through the panic hook, never to stdout.
pub fn dispatch<P: Plugin>(
    plugin: &P,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: Vec<u8>,
) -> Outcome {
    let Some(cmd) = env("CNI_COMMAND").filter(|c| !c.is_empty()) else {
        return Outcome {
            stderr: format!(
                "CNI plugin {} (Tether) {}\nCNI protocol versions supported: {}\n",
                plugin.name(),
                env!("CARGO_PKG_VERSION"),
                plugin.versions().join(", ")
            ),
            ..Default::default()
        };
    };
    let Some(command) = Command::parse(&cmd) else {
        return error_outcome(
            &Error::invalid_env(format!(
                "unknown CNI_COMMAND: {cmd} (expected ADD, DEL, CHECK, STATUS, GC or VERSION)"
            )),
            version::CURRENT,
        );
    };
    if command == Command::Version {
        let v = json!({
            "cniVersion": version::CURRENT,
            "supportedVersions": plugin.versions(),
        });
        return Outcome {
            stdout: v.to_string(),
            ..Default::default()
        };
    }
    let req = match Request::from_env(command, env, stdin) {
        Ok(r) => r,
        Err(e) => return error_outcome(&e, version::CURRENT),
    };
    let reply_version = req.conf.cni_version.clone();
    match catch_unwind(AssertUnwindSafe(|| handle(plugin, &req))) {
        Ok(Ok(Some(result))) => Outcome {
            stdout: result.to_json(&reply_version).to_string(),
            ..Default::default()
        },
        Ok(Ok(None)) => Outcome::default(),
        Ok(Err(e)) => error_outcome(&e, &reply_version),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            error_outcome(
                &Error::internal(format!("plugin {} panicked: {msg}", plugin.name())),
                &reply_version,
            )
        }
    }
}

fn handle<P: Plugin>(plugin: &P, req: &Request) -> Result<Option<CniResult>, Error> {
    let v = req.conf.cni_version.as_str();
    if !plugin.versions().contains(&v) {
        return Err(Error::new(
            ErrorCode::IncompatibleVersion,
            format!("incompatible CNI versions: config is {v:?}"),
        )
        .with_details(format!(
            "plugin {} supports {:?}",
            plugin.name(),
            plugin.versions()
        )));
    }
    warn_unknown_args(plugin, req);
    let need = |min: &str| {
        if version::at_least(v, min) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "config version {v} does not allow {} (needs {min} or newer)",
                    req.command.as_str()
                ),
            ))
        }
    };
    tracing::debug!(plugin = plugin.name(), command = req.command.as_str(), container = %req.container_id, ifname = %req.ifname, "invoked");
    match req.command {
        Command::Add => {
            check_netns_path(req.netns.as_deref().expect("required for ADD"))?;
            let mut r = plugin.add(req)?;
            r.cni_version = v.to_string();
            Ok(Some(r))
        }
        Command::Del => plugin.del(req).map(|()| None),
        Command::Check => {
            need("0.4.0")?;
            check_netns_path(req.netns.as_deref().expect("required for CHECK"))?;
            plugin.check(req).map(|()| None)
        }
        Command::Status => {
            need("1.1.0")?;
            plugin.status(req).map(|()| None)
        }
        Command::Gc => {
            need("1.1.0")?;
            match req.valid_attachments()? {
                Some(valid) => plugin.gc(req, &valid).map(|()| None),
                None => {
                    tracing::warn!(
                        "GC without cni.dev/valid-attachments: nothing is known to be stale, nothing removed"
                    );
                    Ok(None)
                }
            }
        }
        Command::Version => unreachable!("handled before parsing the request"),
    }
}

fn warn_unknown_args<P: Plugin>(plugin: &P, req: &Request) {
    let ignore_unknown = req
        .cni_arg("IgnoreUnknown")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if ignore_unknown {
        return;
    }
    for (k, _) in &req.args {
        // Orchestrators send their own keys to every plugin; they are not a mistake.
        if k == "IgnoreUnknown"
            || k.starts_with("K8S_")
            || plugin.known_args().contains(&k.as_str())
        {
            continue;
        }
        tracing::warn!(key = %k, "ignoring unknown CNI_ARGS key");
    }
}

fn error_outcome(e: &Error, cni_version: &str) -> Outcome {
    tracing::debug!(code = e.code, msg = %e.msg, "returning CNI error");
    Outcome {
        stdout: e.to_json(cni_version).to_string(),
        stderr: String::new(),
        exit_code: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::IpConfig;
    use std::collections::HashMap;

    struct Fake;
    impl Plugin for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn add(&self, req: &Request) -> Result<CniResult, Error> {
            if req.ifname == "boom" {
                panic!("kaboom");
            }
            Ok(CniResult {
                ips: vec![IpConfig {
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: None,
                    interface: None,
                }],
                ..Default::default()
            })
        }
        fn del(&self, _req: &Request) -> Result<(), Error> {
            Ok(())
        }
    }

    fn run_with(pairs: &[(&str, &str)], stdin: &str) -> Outcome {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        dispatch(
            &Fake,
            &move |k| m.get(k).cloned(),
            stdin.as_bytes().to_vec(),
        )
    }

    fn add_env(ifname: &'static str) -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/proc/self/ns/net"),
            ("CNI_IFNAME", ifname),
        ]
    }

    #[test]
    fn about_and_version() {
        let o = run_with(&[], "");
        assert_eq!(o.exit_code, 0);
        assert!(o.stdout.is_empty());
        assert!(o.stderr.contains("CNI protocol versions supported: 0.1.0"));
        let o = run_with(&[("CNI_COMMAND", "VERSION")], "");
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7);
        let o = run_with(&[("CNI_COMMAND", "FROB")], "");
        assert_eq!(o.exit_code, 1);
        assert!(o.stdout.contains("\"code\":4"));
    }

    #[test]
    fn add_in_each_version() {
        for v in version::ALL {
            let conf = format!(r#"{{"cniVersion":"{v}","name":"n","type":"fake"}}"#);
            let o = run_with(&add_env("eth0"), &conf);
            assert_eq!(o.exit_code, 0, "{}", o.stdout);
            let j: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
            assert_eq!(j["cniVersion"], *v);
        }
    }

    #[test]
    fn unsupported_version_lists_supported() {
        let o = run_with(
            &add_env("eth0"),
            r#"{"cniVersion":"9.9.9","name":"n","type":"fake"}"#,
        );
        let j: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(j["code"], 1);
        assert!(j["details"].as_str().unwrap().contains("1.1.0"));
    }

    #[test]
    fn panic_becomes_error_json() {
        let o = run_with(
            &add_env("boom"),
            r#"{"cniVersion":"1.0.0","name":"n","type":"fake"}"#,
        );
        assert_eq!(o.exit_code, 1);
        let j: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(j["code"], 999);
        assert!(j["msg"].as_str().unwrap().contains("kaboom"));
    }

    #[test]
    fn check_needs_040_and_gc_needs_110() {
        let mut env = add_env("eth0");
        env[0] = ("CNI_COMMAND", "CHECK");
        let o = run_with(&env, r#"{"cniVersion":"0.3.1","name":"n","type":"fake"}"#);
        assert!(o.stdout.contains("\"code\":1"), "{}", o.stdout);
        let o = run_with(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
            r#"{"cniVersion":"1.0.0","name":"n","type":"fake"}"#,
        );
        assert!(o.stdout.contains("\"code\":1"), "{}", o.stdout);
        let o = run_with(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
            r#"{"cniVersion":"1.1.0","name":"n","type":"fake","cni.dev/valid-attachments":[]}"#,
        );
        assert_eq!(o.exit_code, 0, "{}", o.stdout);
    }

    #[test]
    fn bad_netns() {
        let mut env = add_env("eth0");
        env[2] = ("CNI_NETNS", "/does/not/exist");
        let o = run_with(&env, r#"{"cniVersion":"1.0.0","name":"n","type":"fake"}"#);
        assert!(o.stdout.contains("\"code\":3"), "{}", o.stdout);
    }
}
