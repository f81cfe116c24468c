//! A container's network record, as its state file keeps it, and the CNI calls that run from it.
//!
//! ```text
//! plan     NetworkRecord::new(mode, conflist, ports, joined, pin)   saved before anything exists
//! ADD      record.add(paths, id, netns)   -> record.result          saved with the running state
//! DEL      record.down(paths, id, held)   DEL, then the pin goes    rm, stop, the supervisor
//! prune    record.attachment(id)          the valid set of GC
//! ```
//!
//! Everything is typed: the conflist is the very `ConfList` ADD ran (written as its JSON, read
//! back once when the state is loaded), the result a `CniResult` (written in the 1.1.0 shape).

use super::NetMode;
use crate::error::{Context, Result};
use crate::paths::Paths;
use crate::units::PortMapping;
use cni::CniResult;
use cni::runtime::{ConfList, RuntimeConf};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRecord {
    /// What `--net` said.
    pub mode: NetMode,
    pub ifname: String,
    /// The conflist exactly as used for ADD, so DEL runs the same plugins.
    #[serde(with = "conflist_json")]
    pub conflist: ConfList,
    pub ports: Vec<PortMapping>,
    /// For `container:NAME`: the id of the container whose namespace is shared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined: Option<String>,
    /// The pinned network namespace (`<root>/netns/<id>`), for modes with a namespace of their
    /// own. Recorded before the pin is made, so whoever finds the record can remove the pin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<PathBuf>,
    /// The container's name and `--network-alias`es, for a list with `dnsname` (passed as
    /// `K8S_POD_NAME` in `CNI_ARGS`, as Podman does, and the `aliases` capability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The final CNI result of ADD.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "result_json")]
    pub result: Option<CniResult>,
}

impl NetworkRecord {
    pub fn new(
        mode: NetMode,
        conflist: ConfList,
        ports: Vec<PortMapping>,
        joined: Option<String>,
        netns_path: Option<PathBuf>,
    ) -> NetworkRecord {
        NetworkRecord {
            mode,
            ifname: "eth0".into(),
            conflist,
            ports,
            joined,
            netns_path,
            dns_name: None,
            aliases: Vec::new(),
            result: None,
        }
    }

    /// The network's name (its conflist's).
    pub fn name(&self) -> &str {
        &self.conflist.name
    }

    /// The one place a container's CNI runtime config is made, for ADD and DEL alike.
    fn runtime_conf(&self, container_id: &str, netns: PathBuf) -> RuntimeConf {
        let mut caps = Map::new();
        if !self.ports.is_empty() {
            caps.insert("portMappings".into(), json!(self.ports));
        }
        let mut args = Vec::new();
        if super::conflist::has_dnsname(&self.conflist) {
            if let Some(n) = &self.dns_name {
                args.push(("IgnoreUnknown".to_string(), "1".to_string()));
                args.push(("K8S_POD_NAME".to_string(), n.clone()));
            }
            if !self.aliases.is_empty() {
                caps.insert("aliases".into(), json!({ self.name(): self.aliases }));
            }
        }
        RuntimeConf {
            container_id: container_id.to_string(),
            netns,
            ifname: self.ifname.clone(),
            args,
            capability_args: caps,
        }
    }

    /// This container's attachment, as GC's valid set names it.
    pub fn attachment(&self, container_id: &str) -> cni::Attachment {
        cni::Attachment {
            container_id: container_id.to_string(),
            ifname: self.ifname.clone(),
        }
    }

    /// CNI ADD in `netns`; the result is kept in the record.
    pub fn add(&mut self, paths: &Paths, container_id: &str, netns: PathBuf) -> Result<&CniResult> {
        let rt = self.runtime_conf(container_id, netns);
        let result = tracing::debug_span!("cni_add", network = %self.name())
            .in_scope(|| paths.invoker().add(&self.conflist, &rt))
            .ctx(format!("network {}: ADD failed", self.name()))?;
        Ok(self.result.insert(result))
    }

    /// CNI DEL (in reverse plugin order, with the cached result), then the namespace's unpinning.
    /// `held` is the container's namespace held open by the caller, for when it has no pin.
    /// Returns what failed.
    pub fn down(&self, paths: &Paths, container_id: &str, held: Option<&OwnedFd>) -> Vec<String> {
        let mut errors = Vec::new();
        // The pinned namespace if it is still there, else one we hold open, else empty: that
        // tells the plugins the namespace is gone (a stale /proc/<pid>/ns/net could name another
        // process's namespace).
        let netns = self
            .netns_path
            .clone()
            .filter(|p| crate::netns::is_pinned(p))
            .or_else(|| {
                held.map(|fd| {
                    PathBuf::from(format!(
                        "/proc/{}/fd/{}",
                        std::process::id(),
                        fd.as_raw_fd()
                    ))
                })
            })
            .unwrap_or_default();
        let rt = self.runtime_conf(container_id, netns);
        let del = tracing::debug_span!("cni_del", network = %self.name())
            .in_scope(|| paths.invoker().del(&self.conflist, &rt));
        if let Err(e) = del {
            errors.push(format!("network {}: DEL failed: {e}", self.name()));
            return errors;
        }
        // Unpinned only after a successful DEL, so a retry can still enter the namespace; the
        // namespace (and anything left in it) goes with the last mount.
        if let Some(p) = &self.netns_path
            && let Err(e) = tracing::debug_span!("netns_unpin").in_scope(|| crate::netns::unpin(p))
        {
            errors.push(e.to_string());
        }
        errors
    }
}

/// A `ConfList` as its JSON (what `to_json` writes), read back without a second parse.
mod conflist_json {
    use cni::runtime::ConfList;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        cni_version: String,
        name: String,
        #[serde(default)]
        disable_check: bool,
        #[serde(default, rename = "disableGC")]
        disable_gc: bool,
        plugins: Vec<Value>,
    }

    pub fn serialize<S: Serializer>(l: &ConfList, s: S) -> Result<S::Ok, S::Error> {
        l.to_json().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ConfList, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(ConfList {
            cni_version: w.cni_version,
            name: w.name,
            disable_check: w.disable_check,
            disable_gc: w.disable_gc,
            plugins: w.plugins,
        })
    }
}

/// A result in the spec's current shape; any version's shape is read.
mod result_json {
    use cni::CniResult;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(r: &Option<CniResult>, s: S) -> Result<S::Ok, S::Error> {
        r.as_ref()
            .map(|r| r.to_json(cni::version::CURRENT))
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CniResult>, D::Error> {
        Option::<Value>::deserialize(d)?
            .map(|v| CniResult::from_json(&v).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_it_was_written() {
        let (_d, p) = crate::network::test_paths();
        let mut list = crate::network::builtin_bridge(&p);
        crate::network::add_portmap(&mut list);
        let port = crate::units::parse_port("8080:80").unwrap();
        let mut rec = NetworkRecord::new(
            NetMode::Network("bridge".into()),
            list,
            vec![port],
            None,
            Some(PathBuf::from("/run/tether/netns/x")),
        );
        rec.result = Some(
            CniResult::from_json(&json!({
                "cniVersion": "1.1.0",
                "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
                "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 0}]
            }))
            .unwrap(),
        );
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["mode"], "bridge");
        assert_eq!(v["conflist"]["plugins"][1]["type"], "portmap");
        assert_eq!(v["result"]["ips"][0]["address"], "10.88.0.5/16");
        let back: NetworkRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back.mode, rec.mode);
        assert_eq!(back.conflist, rec.conflist);
        assert_eq!(back.result, rec.result);
        assert_eq!(back.netns_path, rec.netns_path);
        // ADD and DEL get the same runtime config from it.
        let rt = back.runtime_conf("c1", PathBuf::from("/x"));
        assert_eq!(rt.capability_args["portMappings"][0]["hostPort"], 8080);
        assert_eq!(rt.ifname, "eth0");
    }
}
