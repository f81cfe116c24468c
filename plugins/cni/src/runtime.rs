//! The runtime side: load conflists and run them as libcni does (per-plugin config derivation,
//! `prevResult` chaining, a result cache for DEL/CHECK/GC).

use crate::error::{Error, ErrorCode, ResultExt};
use crate::invoke::exec_plugin;
pub use crate::invoke::find_plugin;
use crate::result::CniResult;
pub use crate::types::Attachment;
use crate::types::valid_id;
use crate::version;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

/// A network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    pub cni_version: String,
    pub name: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<Value>,
}

fn bool_field(obj: &Map<String, Value>, key: &str) -> Result<bool, Error> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        // libcni accepts the strings "true"/"false" in any case.
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(Error::invalid_config(format!(
            "{key} must be a boolean, got {other}"
        ))),
    }
}

impl ConfList {
    /// Parses a `.conflist`, or a single-plugin `.conf` (wrapped into a list of one, as libcni does).
    pub fn from_bytes(b: &[u8]) -> Result<ConfList, Error> {
        let v: Value = serde_json::from_slice(b).cni_context(
            ErrorCode::DecodingFailure,
            "failed to parse network configuration list",
        )?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::invalid_config("network configuration must be a JSON object"))?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !valid_id(&name) {
            return Err(Error::invalid_config(format!(
                "invalid or missing network name {name:?}: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"
            )));
        }
        let plugins = match obj.get("plugins") {
            Some(Value::Array(p)) if !p.is_empty() => p.clone(),
            Some(_) => {
                return Err(Error::invalid_config(format!(
                    "network {name}: \"plugins\" must be a non-empty list"
                )));
            }
            None if obj.contains_key("type") => vec![v.clone()],
            None => {
                return Err(Error::invalid_config(format!(
                    "network {name}: no \"plugins\" list and no \"type\""
                )));
            }
        };
        for p in &plugins {
            if p.get("type")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(Error::invalid_config(format!(
                    "network {name}: every plugin needs a \"type\""
                )));
            }
        }
        // cniVersions (1.1): the highest version both sides know wins.
        let mut cni_version = obj
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(Value::Array(vs)) = obj.get("cniVersions") {
            let best = vs
                .iter()
                .filter_map(Value::as_str)
                .chain(std::iter::once(cni_version.as_str()))
                .filter(|v| version::ALL.contains(v))
                .max_by_key(|v| version::parse(v));
            if let Some(b) = best {
                cni_version = b.to_string();
            }
        }
        if cni_version.is_empty() {
            cni_version = "0.1.0".into();
        }
        Ok(ConfList {
            cni_version,
            name,
            disable_check: bool_field(obj, "disableCheck")?,
            disable_gc: bool_field(obj, "disableGC")?,
            plugins,
        })
    }

    pub fn load_file(p: &Path) -> Result<ConfList, Error> {
        let b = std::fs::read(p).cni_context(
            ErrorCode::IoFailure,
            format!("failed to read {}", p.display()),
        )?;
        ConfList::from_bytes(&b).map_err(|e| e.context(p.display()))
    }

    /// Finds network `name` in `dir`: `*.conflist` first, then `*.conf`/`*.json`, each in
    /// lexicographic order, first match wins (libcni's rule).
    pub fn load(dir: &Path, name: &str) -> Result<ConfList, Error> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for exts in [&["conflist"][..], &["conf", "json"][..]] {
            for f in &files {
                let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
                if !exts.contains(&ext) {
                    continue;
                }
                if let Ok(l) = ConfList::load_file(f)
                    && l.name == name
                {
                    return Ok(l);
                }
            }
        }
        Err(Error::invalid_config(format!(
            "no network named {name:?} in {}",
            dir.display()
        )))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "disableCheck": self.disable_check,
            "disableGC": self.disable_gc,
            "plugins": self.plugins,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.to_json()).expect("conflist serializes")
    }
}

/// What the runtime knows about one attachment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `ips`, `mac`, ...), injected as `runtimeConfig` into
    /// plugins that declare the capability.
    pub capability_args: Map<String, Value>,
}

/// The cached state of one attachment (`<cache>/results/<net>-<cid>-<ifname>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedAttachment {
    pub kind: String,
    #[serde(rename = "networkName")]
    pub network_name: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    #[serde(rename = "ifName")]
    pub ifname: String,
    pub netns: PathBuf,
    #[serde(rename = "cniArgs", default)]
    pub args: Vec<(String, String)>,
    #[serde(rename = "capabilityArgs", default)]
    pub capability_args: Map<String, Value>,
    pub config: Value,
    pub result: Value,
}

/// Runs conflists through the plugins on `cni_path`, caching results under `cache_dir`.
#[derive(Debug, Clone)]
pub struct Invoker {
    pub cni_path: Vec<PathBuf>,
    pub cache_dir: PathBuf,
}

impl Invoker {
    pub fn new(cni_path: Vec<PathBuf>, cache_dir: PathBuf) -> Invoker {
        Invoker {
            cni_path,
            cache_dir,
        }
    }

    fn cache_file(&self, network: &str, cid: &str, ifname: &str) -> PathBuf {
        self.cache_dir
            .join("results")
            .join(format!("{network}-{cid}-{ifname}"))
    }

    /// The cached attachment, if any.
    pub fn cached(&self, network: &str, cid: &str, ifname: &str) -> Option<CachedAttachment> {
        let b = std::fs::read(self.cache_file(network, cid, ifname)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Every cached attachment of `network`.
    pub fn cached_attachments(&self, network: &str) -> Vec<CachedAttachment> {
        let Ok(rd) = std::fs::read_dir(self.cache_dir.join("results")) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<CachedAttachment>(&b).ok())
            .filter(|c| c.network_name == network)
            .collect()
    }

    /// The `CNI_*` environment of one plugin exec: the command, the attachment's variables when
    /// there is one (`CNI_ARGS` only when non-empty), and `CNI_PATH`.
    pub fn env(&self, command: &str, rt: Option<&RuntimeConf>) -> Vec<(&'static str, String)> {
        let mut env = vec![("CNI_COMMAND", command.to_string())];
        if let Some(rt) = rt {
            env.push(("CNI_CONTAINERID", rt.container_id.clone()));
            env.push(("CNI_NETNS", rt.netns.display().to_string()));
            env.push(("CNI_IFNAME", rt.ifname.clone()));
            let args: Vec<String> = rt.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if !args.is_empty() {
                env.push(("CNI_ARGS", args.join(";")));
            }
        }
        let path: Vec<String> = self
            .cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        env.push(("CNI_PATH", path.join(":")));
        env
    }

    /// The config one plugin of the list receives (spec "config derivation").
    fn plugin_conf(
        list: &ConfList,
        plugin: &Value,
        rt: Option<&RuntimeConf>,
        prev: Option<&CniResult>,
    ) -> Value {
        let mut conf = plugin.as_object().cloned().unwrap_or_default();
        conf.insert("cniVersion".into(), json!(list.cni_version));
        conf.insert("name".into(), json!(list.name));
        if let Some(rt) = rt {
            let caps = plugin.get("capabilities").and_then(Value::as_object);
            let mut runtime_config = Map::new();
            for (cap, wanted) in caps.into_iter().flatten() {
                if wanted.as_bool() == Some(true)
                    && let Some(v) = rt.capability_args.get(cap)
                {
                    runtime_config.insert(cap.clone(), v.clone());
                }
            }
            if !runtime_config.is_empty() {
                conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
            }
        }
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.to_json(&list.cni_version));
        }
        Value::Object(conf)
    }

    fn exec(
        &self,
        plugin: &Value,
        env: &[(&str, String)],
        conf: &Value,
    ) -> Result<Option<Value>, Error> {
        let ty = plugin.get("type").and_then(Value::as_str).unwrap_or("");
        let bin = find_plugin(ty, &self.cni_path)?;
        let stdin = serde_json::to_vec(conf).expect("config serializes");
        exec_plugin(&bin, env, &stdin)
    }

    /// ADD through the whole list. On failure every plugin already run is DEL'd (best effort), so
    /// nothing is left half-made, and the error names the plugin that failed.
    pub fn add(&self, list: &ConfList, rt: &RuntimeConf) -> Result<CniResult, Error> {
        let env = self.env("ADD", Some(rt));
        let mut prev: Option<CniResult> = None;
        for (i, plugin) in list.plugins.iter().enumerate() {
            let conf = Self::plugin_conf(list, plugin, Some(rt), prev.as_ref());
            let out = self.exec(plugin, &env, &conf).and_then(|out| {
                out.map(|v| CniResult::from_json(&v))
                    .transpose()?
                    .ok_or_else(|| Error::internal("plugin printed no result on ADD".to_string()))
            });
            match out {
                Ok(r) => prev = Some(r),
                Err(e) => {
                    let ty = plugin.get("type").and_then(Value::as_str).unwrap_or("?");
                    self.del_plugins(list, rt, &list.plugins[..=i], prev.as_ref());
                    return Err(e.context(format!("network {}: plugin {ty} ADD", list.name)));
                }
            }
        }
        let mut result = prev.unwrap_or_default();
        result.cni_version = list.cni_version.clone();
        self.write_cache(list, rt, &result)?;
        Ok(result)
    }

    fn write_cache(
        &self,
        list: &ConfList,
        rt: &RuntimeConf,
        result: &CniResult,
    ) -> Result<(), Error> {
        let cached = CachedAttachment {
            kind: "tetherCacheV1".into(),
            network_name: list.name.clone(),
            container_id: rt.container_id.clone(),
            ifname: rt.ifname.clone(),
            netns: rt.netns.clone(),
            args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            config: list.to_json(),
            result: result.to_json(version::CURRENT),
        };
        let path = self.cache_file(&list.name, &rt.container_id, &rt.ifname);
        std::fs::create_dir_all(path.parent().expect("has parent")).cni_context(
            ErrorCode::IoFailure,
            format!("failed to create {}", self.cache_dir.display()),
        )?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&cached).expect("cache serializes"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .cni_context(
                ErrorCode::IoFailure,
                format!("failed to write {}", path.display()),
            )
    }

    /// DEL in reverse order; keeps going after errors and returns the first one.
    fn del_plugins(
        &self,
        list: &ConfList,
        rt: &RuntimeConf,
        plugins: &[Value],
        prev: Option<&CniResult>,
    ) -> Option<Error> {
        let env = self.env("DEL", Some(rt));
        // prevResult on DEL exists from 0.4.0 on.
        let prev = prev.filter(|_| version::at_least(&list.cni_version, "0.4.0"));
        let mut first = None;
        for plugin in plugins.iter().rev() {
            let conf = Self::plugin_conf(list, plugin, Some(rt), prev);
            if let Err(e) = self.exec(plugin, &env, &conf) {
                let ty = plugin.get("type").and_then(Value::as_str).unwrap_or("?");
                tracing::warn!(plugin = ty, error = %e, "DEL failed");
                first.get_or_insert(e.context(format!("network {}: plugin {ty} DEL", list.name)));
            }
        }
        first
    }

    /// DEL through the list in reverse, with the cached result as `prevResult`; removes the cache
    /// entry when every plugin succeeded. Idempotent.
    pub fn del(&self, list: &ConfList, rt: &RuntimeConf) -> Result<(), Error> {
        let cached = self.cached(&list.name, &rt.container_id, &rt.ifname);
        let prev = cached
            .as_ref()
            .and_then(|c| CniResult::from_json(&c.result).ok());
        if let Some(e) = self.del_plugins(list, rt, &list.plugins, prev.as_ref()) {
            return Err(e);
        }
        let path = self.cache_file(&list.name, &rt.container_id, &rt.ifname);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::new(
                ErrorCode::IoFailure,
                format!("failed to remove {}: {e}", path.display()),
            )),
        }
    }

    /// CHECK every plugin with the cached result (spec ≥ 0.4.0, unless `disableCheck`).
    pub fn check(&self, list: &ConfList, rt: &RuntimeConf) -> Result<(), Error> {
        if !version::at_least(&list.cni_version, "0.4.0") {
            return Err(Error::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "network {}: CHECK needs cniVersion 0.4.0 or newer, the list has {}",
                    list.name, list.cni_version
                ),
            ));
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self
            .cached(&list.name, &rt.container_id, &rt.ifname)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::UnknownContainer,
                    format!(
                        "no cached result for {} on network {}: was it added?",
                        rt.container_id, list.name
                    ),
                )
            })?;
        let prev = CniResult::from_json(&cached.result)?;
        let env = self.env("CHECK", Some(rt));
        for plugin in &list.plugins {
            let conf = Self::plugin_conf(list, plugin, Some(rt), Some(&prev));
            self.exec(plugin, &env, &conf)?;
        }
        Ok(())
    }

    /// STATUS of every plugin (spec ≥ 1.1.0; older lists have no STATUS and are assumed ready).
    pub fn status(&self, list: &ConfList) -> Result<(), Error> {
        if !version::at_least(&list.cni_version, "1.1.0") {
            return Ok(());
        }
        let env = self.env("STATUS", None);
        for plugin in &list.plugins {
            let conf = Self::plugin_conf(list, plugin, None, None);
            self.exec(plugin, &env, &conf)?;
        }
        Ok(())
    }

    /// GC as libcni does it: DEL every cached attachment of this network that is not valid, then
    /// (spec ≥ 1.1.0, unless `disableGC`) send GC with the valid set to every plugin.
    pub fn gc(&self, list: &ConfList, valid: &[Attachment]) -> Result<(), Error> {
        let mut first: Option<Error> = None;
        for c in self.cached_attachments(&list.name) {
            let still_valid = valid
                .iter()
                .any(|a| a.container_id == c.container_id && a.ifname == c.ifname);
            if still_valid {
                continue;
            }
            let rt = RuntimeConf {
                container_id: c.container_id.clone(),
                netns: c.netns.clone(),
                ifname: c.ifname.clone(),
                args: c.args.clone(),
                capability_args: c.capability_args.clone(),
            };
            if let Err(e) = self.del(list, &rt) {
                first.get_or_insert(e);
            }
        }
        if version::at_least(&list.cni_version, "1.1.0") && !list.disable_gc {
            let env = self.env("GC", None);
            for plugin in &list.plugins {
                let mut conf = Self::plugin_conf(list, plugin, None, None);
                let v = serde_json::to_value(valid).expect("attachments serialize");
                conf["cni.dev/valid-attachments"] = v.clone();
                conf["cni.dev/attachments"] = v;
                if let Err(e) = self.exec(plugin, &env, &conf) {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_single_confs() {
        let l = ConfList::from_bytes(
            br#"{"cniVersion":"0.4.0","cniVersions":["1.0.0","1.1.0","9.0.0"],"name":"n","disableCheck":"TRUE",
                "plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        assert_eq!(l.cni_version, "1.1.0");
        assert!(l.disable_check);
        assert_eq!(l.plugins.len(), 2);
        let single =
            ConfList::from_bytes(br#"{"cniVersion":"0.3.1","name":"n","type":"bridge"}"#).unwrap();
        assert_eq!(single.plugins.len(), 1);
        assert!(ConfList::from_bytes(br#"{"name":"n","plugins":[]}"#).is_err());
        assert!(ConfList::from_bytes(br#"{"name":"../x","type":"bridge"}"#).is_err());
        assert!(ConfList::from_bytes(br#"{"name":"n","plugins":[{"type":"a/b"}]}"#).is_ok());
    }

    #[test]
    fn derived_config_has_runtime_config_only_for_declared_capabilities() {
        let l = ConfList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"portmap","capabilities":{"portMappings":true,"ips":false}}]}"#,
        )
        .unwrap();
        let mut rt = RuntimeConf::default();
        rt.capability_args
            .insert("portMappings".into(), json!([{"hostPort": 8080}]));
        rt.capability_args.insert("ips".into(), json!(["10.0.0.2"]));
        rt.capability_args.insert("mac".into(), json!("aa"));
        let c = Invoker::plugin_conf(&l, &l.plugins[0], Some(&rt), None);
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(c["runtimeConfig"].get("ips").is_none());
        assert_eq!(c["name"], "n");
        assert_eq!(c["cniVersion"], "1.0.0");
    }

    #[test]
    fn find_plugin_names_the_path() {
        let e = find_plugin("nope", &[PathBuf::from("/a"), PathBuf::from("/b")]).unwrap_err();
        assert!(
            e.msg.contains("\"nope\"") && e.msg.contains("/a:/b"),
            "{}",
            e.msg
        );
        assert!(find_plugin("../x", &[]).is_err());
    }
}
