//! The config: a parse that DEL tolerates (any value it can read), a validate that only ADD (and
//! CHECK) runs, and where a container's name and aliases come from.
//!
//! Keys (containers/dnsname's, plus two of ours):
//! - `domainName` (default `dns.podman`, as dnsname's): the search domain, names resolve as
//!   `<name>` and `<name>.<domainName>`.
//! - `capabilities: {"aliases": true}` / `runtimeConfig.aliases`: extra names. Podman's shape is
//!   a map from network name to a list (`{"net1": ["db"]}`: this network's entry is used); a
//!   plain list is accepted too.
//! - `dataDir` (ours; else `$TETHER_DNS_DIR`, else `/run/tether/dns`): the state directory.
//! - `resolvConf` (ours; default `/etc/resolv.conf`): where the server reads its upstreams.
//!
//! The container's own name: `K8S_POD_NAME` in `CNI_ARGS` (what dnsname reads, and what Podman
//! and Tether pass: the container's `--name`), else `args.cni.name`. Without a name and aliases
//! the container gets no record, but still the result's `dns` (it can resolve the others).

use std::path::PathBuf;

use cni::{Error, Request};
use serde::Deserialize;
use serde_json::Value;
use tether_dns_state::{valid_domain, valid_label};
use tether_kit::Error as KitError;

/// dnsname's default domain.
pub const DEFAULT_DOMAIN: &str = "dns.podman";
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Raw {
    domain_name: Option<Value>,
    data_dir: Option<Value>,
    resolv_conf: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub network: String,
    /// Lowercase, without a trailing dot.
    pub domain: String,
    pub data_dir: PathBuf,
    pub resolv_conf: PathBuf,
}

impl Config {
    /// Reads what is there, refusing nothing but JSON that is not an object (DEL must get as
    /// far as removing the records whatever the keys hold).
    pub fn parse(req: &Request) -> Result<Config, Error> {
        let raw: Raw = req.conf_as().unwrap_or_default();
        let s = |v: &Option<Value>| v.as_ref().and_then(Value::as_str).map(str::to_string);
        Ok(Config {
            network: req.conf.name.clone(),
            domain: s(&raw.domain_name)
                .unwrap_or_else(|| DEFAULT_DOMAIN.into())
                .trim_end_matches('.')
                .to_ascii_lowercase(),
            data_dir: s(&raw.data_dir)
                .map(PathBuf::from)
                .unwrap_or_else(tether_dns_state::default_dir),
            resolv_conf: s(&raw.resolv_conf)
                .map(PathBuf::from)
                .unwrap_or_else(|| DEFAULT_RESOLV_CONF.into()),
        })
    }

    /// [`Config::parse`] plus the checks ADD needs: every value that becomes a DNS name or a path.
    pub fn validate(req: &Request) -> Result<Config, Error> {
        let raw: Raw = req.conf_as()?;
        let bad = |m: String| Error::from(KitError::Config(m));
        for (key, v) in [
            ("domainName", &raw.domain_name),
            ("dataDir", &raw.data_dir),
            ("resolvConf", &raw.resolv_conf),
        ] {
            if matches!(v, Some(v) if !v.is_string()) {
                return Err(bad(format!("{key} must be a string")));
            }
        }
        let c = Config::parse(req)?;
        if !valid_domain(&c.domain) {
            return Err(bad(format!(
                "domainName {:?} is not a DNS domain: dot-separated labels of letters, digits and '-', at most 253 bytes",
                c.domain
            )));
        }
        if let Some(why) = c.paths_invalid() {
            return Err(bad(why));
        }
        // The control socket's path must fit in sockaddr_un (108 bytes with its NUL).
        let ctl = tether_dns_state::NetDir::new(&c.data_dir, &c.network).control();
        if ctl.as_os_str().len() > 107 {
            return Err(bad(format!(
                "dataDir {} with network {:?} makes a socket path longer than 107 bytes",
                c.data_dir.display(),
                c.network
            )));
        }
        Ok(c)
    }
}

impl Config {
    /// Why `dataDir` or `resolvConf` is unusable (not absolute, or with `..`), if it is. DEL
    /// and GC touch nothing under such a `dataDir`: no ADD accepted it.
    pub fn paths_invalid(&self) -> Option<String> {
        [
            ("dataDir", &self.data_dir),
            ("resolvConf", &self.resolv_conf),
        ]
        .into_iter()
        .find(|(_, p)| !p.is_absolute() || p.components().any(|c| c.as_os_str() == ".."))
        .map(|(key, p)| {
            format!(
                "{key} {} must be an absolute path without '..'",
                p.display()
            )
        })
    }
}

/// The container's names: its own name first (see the module doc), then its aliases, each a
/// valid DNS label, lowercased, without repeats.
pub fn names(req: &Request, network: &str) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    let push = |n: &str, out: &mut Vec<String>| {
        let n = n.to_ascii_lowercase();
        if !out.contains(&n) {
            out.push(n);
        }
    };
    let own = req.cni_arg("K8S_POD_NAME").map(str::to_string).or_else(|| {
        req.args_cni("name")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if let Some(n) = own.filter(|n| !n.is_empty()) {
        if !valid_label(&n) {
            return Err(KitError::Args(format!(
                "container name {n:?} (K8S_POD_NAME) is not a DNS label: 1-63 letters, digits, '-' or '_', not starting or ending with '-'"
            ))
            .into());
        }
        push(&n, &mut out);
    }
    let aliases: Vec<Value> = match req.runtime_config("aliases") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => match m.get(network) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(alias_shape()),
        },
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(alias_shape()),
    };
    for a in aliases {
        let a = a.as_str().ok_or_else(alias_shape)?;
        if !valid_label(a) {
            return Err(KitError::Config(format!(
                "alias {a:?} (runtimeConfig.aliases) is not a DNS label: 1-63 letters, digits, '-' or '_', not starting or ending with '-'"
            ))
            .into());
        }
        push(a, &mut out);
    }
    Ok(out)
}

fn alias_shape() -> Error {
    KitError::Config(
        "runtimeConfig.aliases must map the network name to a list of names (or be a list)".into(),
    )
    .into()
}
