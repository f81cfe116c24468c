//! Where the runtime keeps things: the state root, the network configs and the plugin search path,
//! as resolved once from the flags, the environment and the config file (`cli/dispatch.rs`).

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where the runtime keeps things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// State root (`/run/tether`).
    pub root: PathBuf,
    /// Network configs (`/etc/tether/net.d`).
    pub config_dir: PathBuf,
    /// Plugin search path, in order.
    pub cni_path: Vec<PathBuf>,
    /// The image store (`/var/lib/tether`): layers, image configs, refs (`image/`).
    pub image_root: PathBuf,
    /// `--firewall-backend` / `firewallBackend`: "iptables" or "nftables", written into the
    /// conflists as the plugins' own keys ([`crate::network::set_firewall_backend`]).
    pub firewall_backend: Option<String>,
}

impl Paths {
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }
    /// The CNI result cache used for DEL, CHECK and GC.
    pub fn cni_cache(&self) -> PathBuf {
        self.root.join("cni")
    }
    /// host-local's lease store for the networks tether writes.
    pub fn ipam_dir(&self) -> PathBuf {
        self.root.join("ipam")
    }
    /// The dnsname plugin's state (records, DNS server pid files) of the networks we create.
    pub fn dns_dir(&self) -> PathBuf {
        self.root.join("dns")
    }
    /// Pinned network namespaces (bind mounts), one per container with its own namespace.
    pub fn netns_dir(&self) -> PathBuf {
        self.root.join("netns")
    }
    pub fn invoker(&self) -> cni::runtime::Invoker {
        cni::runtime::Invoker::new(self.cni_path.clone(), self.cni_cache())
    }
}

/// `--config FILE`: defaults for what the flags and the environment leave unset.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    root: Option<PathBuf>,
    config_dir: Option<PathBuf>,
    /// A `:`-separated string or a list.
    cni_path: Option<Value>,
    image_root: Option<PathBuf>,
    /// "iptables" or "nftables" (see `--firewall-backend`).
    firewall_backend: Option<String>,
}

impl Paths {
    /// The flags (or their environment variables) first, then `config_file`, then the defaults.
    pub fn resolve(
        root: Option<PathBuf>,
        config_dir: Option<PathBuf>,
        cni_path: Option<&str>,
        image_root: Option<PathBuf>,
        firewall_backend: Option<&str>,
        config_file: &Path,
    ) -> Result<Paths> {
        let file: ConfigFile = match std::fs::read(config_file) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::usage(format!("config file {}: {e}", config_file.display())))?,
            Err(_) => ConfigFile::default(),
        };
        // An empty CNI_PATH counts as unset, so the config file or the defaults apply.
        let flag = cni_path.filter(|s| !s.is_empty());
        let user_cni: Vec<PathBuf> = match (flag, &file.cni_path) {
            (Some(s), _) => split_path_list(s),
            (None, Some(Value::String(s))) => split_path_list(s),
            (None, Some(Value::Array(a))) => a
                .iter()
                .filter_map(Value::as_str)
                .map(PathBuf::from)
                .collect(),
            _ => Vec::new(),
        };
        let firewall_backend = firewall_backend
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or(file.firewall_backend);
        if let Some(b) = firewall_backend.as_deref()
            && !matches!(b, "iptables" | "nftables")
        {
            return Err(Error::usage(format!(
                "unknown firewall backend {b:?} (--firewall-backend or firewallBackend in {}): \
                 use iptables or nftables",
                config_file.display()
            )));
        }
        Ok(Paths {
            firewall_backend,
            root: root
                .or(file.root)
                .unwrap_or_else(|| PathBuf::from("/run/tether")),
            config_dir: config_dir
                .or(file.config_dir)
                .unwrap_or_else(|| PathBuf::from("/etc/tether/net.d")),
            cni_path: cni_search_path(&user_cni),
            image_root: image_root
                .or(file.image_root)
                .unwrap_or_else(|| PathBuf::from("/var/lib/tether")),
        })
    }
}

/// The plugin search path: the user's (`--cni-path`, `CNI_PATH` or the config file's `cniPath`)
/// when given, as every CNI runtime treats `CNI_PATH`; otherwise the directory `tether` is installed
/// in (where the workspace builds the plugins), then `/opt/cni/bin`.
pub fn cni_search_path(user: &[PathBuf]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    if user.is_empty() {
        v.extend(
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
        );
        v.push(PathBuf::from("/opt/cni/bin"));
    } else {
        v.extend(user.iter().cloned());
    }
    let mut seen = Vec::new();
    v.retain(|p| {
        if seen.contains(p) {
            false
        } else {
            seen.push(p.clone());
            true
        }
    });
    v
}

pub fn split_path_list(s: &str) -> Vec<PathBuf> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}
