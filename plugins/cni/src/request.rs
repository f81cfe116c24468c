//! One plugin invocation: the `CNI_*` environment and the config on stdin, validated.

use crate::error::{Error, ErrorCode};
use crate::result::CniResult;
use crate::types::{Attachment, NetConf, valid_id, validate_ifname};
use crate::version;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// The environment variables the spec requires for this command.
    fn required_env(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Gc => &["CNI_PATH"],
            Command::Status | Command::Version => &[],
        }
    }
}

/// A validated plugin invocation.
#[derive(Debug, Clone)]
pub struct Request {
    pub command: Command,
    pub container_id: String,
    /// `CNI_NETNS`; for ADD and CHECK it was checked to be a network namespace.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs, in order.
    pub args: Vec<(String, String)>,
    /// `CNI_ARGS` exactly as received, passed on to delegates.
    pub args_raw: String,
    /// `CNI_PATH` split on `:`.
    pub path: Vec<PathBuf>,
    /// The raw stdin (delegates get it unchanged).
    pub stdin: Vec<u8>,
    /// stdin parsed as JSON.
    pub raw: Value,
    pub conf: NetConf,
    /// `prevResult`, converted from whatever version it came in.
    pub prev_result: Option<CniResult>,
}

impl Request {
    /// Reads and validates one invocation. `env` returns a variable's value, `None` when unset.
    pub fn from_env(
        command: Command,
        env: &dyn Fn(&str) -> Option<String>,
        stdin: Vec<u8>,
    ) -> Result<Request, Error> {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        let missing: Vec<&str> = command
            .required_env()
            .iter()
            .copied()
            .filter(|k| get(k).is_none())
            .collect();
        if missing.len() == 1 && missing[0] == "CNI_CONTAINERID" {
            return Err(Error::new(
                ErrorCode::UnknownContainer,
                "missing containerID: CNI_CONTAINERID must be set",
            ));
        }
        if !missing.is_empty() {
            return Err(Error::invalid_env(format!(
                "required env variables [{}] missing",
                missing.join(",")
            )));
        }
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        if !container_id.is_empty() && !valid_id(&container_id) {
            return Err(Error::invalid_env(format!(
                "invalid characters in CNI_CONTAINERID {container_id:?}: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"
            )));
        }
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        if !ifname.is_empty() {
            validate_ifname(&ifname).map_err(|e| Error::invalid_env(format!("CNI_IFNAME: {e}")))?;
        }
        let netns = get("CNI_NETNS").map(PathBuf::from);
        let args_raw = get("CNI_ARGS").unwrap_or_default();
        let args = parse_cni_args(&args_raw)?;
        let path = get("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();

        let raw: Value = serde_json::from_slice(&stdin).map_err(|e| {
            Error::new(
                ErrorCode::DecodingFailure,
                format!("failed to parse network configuration: {e}"),
            )
        })?;
        if !raw.is_object() {
            return Err(Error::new(
                ErrorCode::DecodingFailure,
                "network configuration must be a JSON object",
            ));
        }
        // serde reads a list as a struct, field by field: `"ipam": []` would be an L2-only
        // network and `"ipam": ["host-local"]` would name the IPAM plugin. The reference's
        // decoder refuses both; so do we, for every key the spec makes an object.
        for key in [
            "ipam",
            "dns",
            "capabilities",
            "runtimeConfig",
            "args",
            "prevResult",
        ] {
            // DEL must clean up even after a runtime cached a damaged result: its prevResult
            // is only a hint (host-side state is found by name), so a bad one is dropped below.
            if key == "prevResult" && command == Command::Del {
                continue;
            }
            match raw.get(key) {
                None | Some(Value::Null | Value::Object(_)) => {}
                Some(other) => {
                    return Err(Error::invalid_config(format!(
                        "invalid \"{key}\": expected an object, not {other}"
                    )));
                }
            }
        }
        let mut conf: NetConf = serde_json::from_value(raw.clone())
            .map_err(|e| Error::invalid_config(format!("invalid network configuration: {e}")))?;
        if conf.cni_version.is_empty() {
            // libcni treats a config without a version as 0.1.0.
            conf.cni_version = "0.1.0".into();
        }
        if command != Command::Version {
            if conf.name.is_empty() {
                return Err(Error::invalid_config(
                    "missing network name: the config must set \"name\"",
                ));
            }
            if !valid_id(&conf.name) {
                return Err(Error::invalid_config(format!(
                    "invalid network name {:?}: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$",
                    conf.name
                )));
            }
        }
        // An empty `prevResult` is none (the spec says it must not fail a DEL). A malformed one
        // is part of an invalid network config (code 7), whichever plugin reads it, except on
        // DEL: there it is ignored with a warning, so that cleanup never depends on it.
        let prev_result = match &conf.prev_result {
            Some(v) if v.as_object().is_some_and(|o| !o.is_empty()) => {
                match CniResult::from_json(v) {
                    Ok(r) => Some(r),
                    Err(e) if command == Command::Del => {
                        tracing::warn!(error = %e.msg, "DEL: ignoring a malformed prevResult");
                        None
                    }
                    Err(e) => return Err(Error::invalid_config(e.msg).context("prevResult")),
                }
            }
            _ => None,
        };
        Ok(Request {
            command,
            container_id,
            netns,
            ifname,
            args,
            args_raw,
            path,
            stdin,
            raw,
            conf,
            prev_result,
        })
    }

    /// Parses the whole config into a plugin's own config struct. Unknown keys are ignored, as the
    /// reference plugins do.
    pub fn conf_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_value(self.raw.clone())
            .map_err(|e| Error::invalid_config(format!("invalid network configuration: {e}")))
    }

    /// A `CNI_ARGS` value by key (last one wins, as in the reference).
    pub fn cni_arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `runtimeConfig.<key>`.
    pub fn runtime_config(&self, key: &str) -> Option<&Value> {
        self.raw.get("runtimeConfig")?.get(key)
    }

    /// `args.cni.<key>`.
    pub fn args_cni(&self, key: &str) -> Option<&Value> {
        self.raw.get("args")?.get("cni")?.get(key)
    }

    /// The requested result version.
    pub fn version(&self) -> &str {
        &self.conf.cni_version
    }

    /// The GC valid-attachment list: `cni.dev/valid-attachments`, or the older
    /// `cni.dev/attachments`. `None` when neither key is present: GC then has no basis to decide
    /// what is stale, and removes nothing.
    pub fn valid_attachments(&self) -> Result<Option<Vec<Attachment>>, Error> {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            if let Some(v) = self.raw.get(key).filter(|v| !v.is_null()) {
                return serde_json::from_value(v.clone())
                    .map(Some)
                    .map_err(|e| Error::invalid_config(format!("invalid {key}: {e}")));
            }
        }
        Ok(None)
    }

    /// The MAC a runtime asked for, by the reference's precedence:
    /// `CNI_ARGS MAC` < `args.cni.mac` < `runtimeConfig.mac`.
    pub fn requested_mac(&self) -> Option<String> {
        self.runtime_config("mac")
            .and_then(Value::as_str)
            .or_else(|| self.args_cni("mac").and_then(Value::as_str))
            .or_else(|| self.cni_arg("MAC"))
            .map(str::to_string)
    }

    /// Is the requested version at least `min`?
    pub fn version_at_least(&self, min: &str) -> bool {
        version::at_least(&self.conf.cni_version, min)
    }
}

/// `K1=V1;K2=V2`. Empty segments are skipped; a segment without `=` is an error.
pub fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, Error> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    Error::invalid_env(format!(
                        "CNI_ARGS: invalid pair {pair:?}: expected KEY=VALUE"
                    ))
                })
        })
        .collect()
}

/// Kept here for callers of the old path; the check lives in [`crate::netns`].
pub use crate::netns::check_netns_path;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"net1","type":"bridge"}"#;

    #[test]
    fn missing_env_names_every_variable() {
        let e = Request::from_env(Command::Add, &env(&[]), CONF.into()).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(
            e.msg.contains("CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME"),
            "{}",
            e.msg
        );
        let e = Request::from_env(
            Command::Add,
            &env(&[("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth0")]),
            CONF.into(),
        )
        .unwrap_err();
        assert_eq!(e.code, 3);
    }

    #[test]
    fn invalid_ids_and_ifnames() {
        let base = [("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth0")];
        let mut bad = base.to_vec();
        bad.push(("CNI_CONTAINERID", "../etc"));
        let e = Request::from_env(Command::Add, &env(&bad), CONF.into()).unwrap_err();
        assert_eq!(e.code, 4);
        let e = Request::from_env(
            Command::Add,
            &env(&[
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "a/b"),
            ]),
            CONF.into(),
        )
        .unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_IFNAME"));
    }

    #[test]
    fn config_errors() {
        let ok = [
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "eth0"),
        ];
        let e = Request::from_env(Command::Add, &env(&ok), b"{nope".to_vec()).unwrap_err();
        assert_eq!(e.code, 6);
        let e = Request::from_env(
            Command::Add,
            &env(&ok),
            br#"{"cniVersion":"1.0.0"}"#.to_vec(),
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        let r = Request::from_env(Command::Add, &env(&ok), CONF.into()).unwrap();
        assert_eq!(r.conf.name, "net1");
    }

    #[test]
    fn cni_args() {
        assert_eq!(
            parse_cni_args("IgnoreUnknown=1;MAC=aa:bb:cc:dd:ee:ff;;").unwrap(),
            vec![
                ("IgnoreUnknown".to_string(), "1".to_string()),
                ("MAC".to_string(), "aa:bb:cc:dd:ee:ff".to_string())
            ]
        );
        assert_eq!(parse_cni_args("novalue").unwrap_err().code, 4);
    }

    #[test]
    fn objects_must_be_objects_and_prev_result_must_be_valid() {
        let call = |command: Command, conf: String| {
            Request::from_env(
                command,
                &env(&[
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_PATH", "/nonexistent"),
                ]),
                conf.into_bytes(),
            )
        };
        let del = |conf: String| call(Command::Del, conf);
        // Every command but DEL reads prevResult strictly (GC needs no netns in this env).
        let strict = |conf: String| call(Command::Gc, conf);
        let conf =
            |extra: &str| format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"t"{extra}}}"#);
        for extra in [
            r#","ipam":[]"#,
            r#","ipam":["host-local"]"#,
            r#","dns":[]"#,
            r#","runtimeConfig":[]"#,
            r#","args":"x""#,
        ] {
            let e = del(conf(extra)).unwrap_err();
            assert_eq!(e.code, 7, "{extra}: {}", e.msg);
            assert!(e.msg.contains("expected an object"), "{extra}: {}", e.msg);
        }
        for extra in [r#","prevResult":[]"#, r#","prevResult":"x""#] {
            let e = strict(conf(extra)).unwrap_err();
            assert_eq!(e.code, 7, "{extra}: {}", e.msg);
            assert!(e.msg.contains("expected an object"), "{extra}: {}", e.msg);
        }
        let bare_address =
            r#","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.68.0.50"}]}"#;
        // DEL cleans up whatever the cached result looks like: a damaged one is dropped.
        for extra in [
            r#","ipam":null"#,
            r#","prevResult":{}"#,
            r#","prevResult":null"#,
            r#","prevResult":[]"#,
            r#","prevResult":"x""#,
            bare_address,
        ] {
            assert!(del(conf(extra)).unwrap().prev_result.is_none(), "{extra}");
        }
        let e = strict(conf(bare_address)).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg
                .starts_with("prevResult: invalid result: ips[0].address")
                && e.msg.contains("no prefix length"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn prev_result_any_version() {
        let conf = r#"{"cniVersion":"0.4.0","name":"n","type":"t","prevResult":{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}}"#;
        let r = Request::from_env(
            Command::Del,
            &env(&[("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")]),
            conf.into(),
        )
        .unwrap();
        assert_eq!(
            r.prev_result.unwrap().ips[0].address.to_string(),
            "10.0.0.2/24"
        );
    }
}
