//! The parts of a network configuration every plugin shares. Plugin-specific keys are parsed by each
//! plugin from the same stdin with its own struct ([`crate::Request::conf_as`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default)]
    pub capabilities: BTreeMap<String, bool>,
    #[serde(default)]
    pub ipam: Option<IpamRef>,
    #[serde(default)]
    pub dns: Option<crate::Dns>,
    #[serde(default)]
    pub runtime_config: Option<Map<String, Value>>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default)]
    pub args: Option<Value>,
}

/// The `ipam` object as far as delegation needs it: which plugin to run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpamRef {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
}

/// One attachment a runtime still considers valid (GC input).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(rename = "ifname")]
    pub ifname: String,
}

/// Network and container ids become file names, chain comments and map keys: the spec's regex
/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` keeps them safe for all of those.
pub fn valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Interface names: 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace (the kernel's rules).
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > 15 {
        return Err(format!(
            "interface name {name:?} is too long ({} bytes, at most 15)",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is not allowed"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "interface name {name:?} contains invalid character {c:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id("abc-1.2_3"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(""));
        assert!(!valid_id("-a"));
        assert!(!valid_id("a b"));
    }

    #[test]
    fn ifnames() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("abcdefghijklmno").is_ok());
        assert!(validate_ifname("abcdefghijklmnop").is_err());
        assert!(validate_ifname("a/b").is_err());
        assert!(validate_ifname("..").is_err());
        assert!(validate_ifname("a:b").is_err());
        assert!(validate_ifname("a b").is_err());
    }
}
