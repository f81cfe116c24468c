//! The conflists tether generates: the built-in `bridge` network, the single-plugin lists of
//! `none`, `host` and `container:`, and `portmap` added for `-p`. Also where plugins are looked
//! for and whether a host port is free.

use super::{CNI_VERSION, DEFAULT_BRIDGE, DEFAULT_NETWORK, DEFAULT_SUBNET};
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::units::PortMapping;
use cni::runtime::ConfList;
use ipnetwork::IpNetwork;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub(super) fn single(name: &str, plugin: &str) -> ConfList {
    ConfList {
        cni_version: CNI_VERSION.into(),
        name: name.into(),
        disable_check: false,
        disable_gc: false,
        plugins: vec![json!({ "type": plugin })],
    }
}

/// A bridge conflist: bridge + host-local.
pub fn bridge_conflist(
    name: &str,
    bridge: &str,
    subnet: IpNetwork,
    gateway: Option<std::net::IpAddr>,
    masquerade: bool,
    ipam_dir: &Path,
) -> ConfList {
    let mut range = json!({ "subnet": subnet.to_string() });
    if let Some(gw) = gateway {
        range["gateway"] = json!(gw.to_string());
    }
    let default_route = if subnet.is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    ConfList {
        cni_version: CNI_VERSION.into(),
        name: name.into(),
        disable_check: false,
        disable_gc: false,
        plugins: vec![json!({
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": masquerade,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[range]],
                "routes": [{ "dst": default_route }],
                "dataDir": ipam_dir.display().to_string(),
            }
        })],
    }
}

/// An overlay conflist: the `overlay` plugin, which finds the agent's lease of network `name`
/// by the default path (or `TETHER_OVERLAY_DIR`) and delegates to bridge + host-local.
pub fn overlay_conflist(name: &str, masquerade: bool) -> ConfList {
    let mut plugin = json!({ "type": "overlay", "network": name });
    if !masquerade {
        plugin["ipMasq"] = json!(false);
    }
    ConfList {
        cni_version: CNI_VERSION.into(),
        name: name.into(),
        disable_check: false,
        disable_gc: false,
        plugins: vec![plugin],
    }
}

/// The overlay network a list attaches to (its first plugin's `network`), if it is one.
pub fn overlay_network(list: &ConfList) -> Option<&str> {
    let first = list.plugins.first()?;
    (first.get("type").and_then(Value::as_str) == Some("overlay"))
        .then(|| first.get("network").and_then(Value::as_str))
        .flatten()
}

pub fn builtin_bridge(paths: &Paths) -> ConfList {
    bridge_conflist(
        DEFAULT_NETWORK,
        DEFAULT_BRIDGE,
        DEFAULT_SUBNET.parse().expect("valid default subnet"),
        None,
        true,
        &paths.ipam_dir(),
    )
}

/// Appends the `dnsname` plugin (names and `--network-alias`es resolve through the DNS server
/// it runs on the gateway), its state under `data_dir`. Refuses a domain that is not one.
pub fn add_dnsname(list: &mut ConfList, domain: &str, data_dir: &Path) -> Result<()> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok {
        return Err(Error::usage(format!(
            "invalid --dns-domain {domain:?}: dot-separated labels of letters, digits and '-'"
        )));
    }
    list.plugins.push(json!({
        "type": "dnsname",
        "domainName": domain.to_ascii_lowercase(),
        "dataDir": data_dir.display().to_string(),
        "capabilities": { "aliases": true },
    }));
    Ok(())
}

/// Does the list resolve names (has a `dnsname` plugin)?
pub fn has_dnsname(list: &ConfList) -> bool {
    list.plugins
        .iter()
        .any(|p| p.get("type").and_then(Value::as_str) == Some("dnsname"))
}

/// Appends the `portmap` plugin (with the `portMappings` capability) unless the list has a plugin
/// with that capability already.
pub fn add_portmap(list: &mut ConfList) {
    let has_portmap = list.plugins.iter().any(|p| {
        p.pointer("/capabilities/portMappings")
            .and_then(Value::as_bool)
            == Some(true)
    });
    if !has_portmap {
        list.plugins.push(json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true,
        }));
    }
}

/// Writes the runtime's firewall backend (`--firewall-backend`, `firewallBackend`) as each
/// plugin's own key, where the list does not set one: `ipMasqBackend` on bridge and overlay, `backend` on
/// portmap and firewall.
pub fn set_firewall_backend(list: &mut ConfList, backend: Option<&str>) {
    let Some(backend) = backend else { return };
    for p in &mut list.plugins {
        let key = match p.get("type").and_then(Value::as_str) {
            Some("bridge") | Some("overlay") => "ipMasqBackend",
            Some("portmap") | Some("firewall") => "backend",
            _ => continue,
        };
        if let Some(obj) = p.as_object_mut() {
            obj.entry(key).or_insert_with(|| json!(backend));
        }
    }
}

/// Whether a list is a bridge network (one `tether run -p` would add `portmap` to): `bridge`,
/// or `overlay`, which delegates to it.
pub fn is_bridge_network(list: &ConfList) -> bool {
    matches!(
        list.plugins
            .first()
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str),
        Some("bridge" | "overlay")
    )
}

/// Fails with a message naming the binary and the search path if any plugin of `list` is missing.
pub fn check_plugins(list: &ConfList, cni_path: &[PathBuf]) -> Result<()> {
    for p in &list.plugins {
        let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
        cni::runtime::find_plugin(ty, cni_path).map_err(|e| {
            Error::usage(format!(
                "network {}: {}; install the plugins (see README) or pass --cni-path",
                list.name, e.msg
            ))
        })?;
        if let Some(ipam) = p.pointer("/ipam/type").and_then(Value::as_str) {
            cni::runtime::find_plugin(ipam, cni_path).map_err(|e| {
                Error::usage(format!(
                    "network {} (IPAM of {ty}): {}; install the plugins (see README) or pass --cni-path",
                    list.name, e.msg
                ))
            })?;
        }
    }
    Ok(())
}

/// Subnets of a conflist's IPAM ranges (for overlap checks and `network ls`).
pub fn subnets(list: &ConfList) -> Vec<IpNetwork> {
    let mut v = Vec::new();
    for p in &list.plugins {
        let Some(ipam) = p.get("ipam") else { continue };
        if let Some(s) = ipam
            .get("subnet")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
        {
            v.push(s);
        }
        for set in ipam
            .get("ranges")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for r in set.as_array().into_iter().flatten() {
                if let Some(s) = r
                    .get("subnet")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                {
                    v.push(s);
                }
            }
        }
    }
    v
}

pub fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// Fails if a host port is taken by a listening socket in tether's (the host's) namespace.
pub fn check_port_free(p: &PortMapping) -> Result<()> {
    let ip = p
        .host_ip
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let addr = std::net::SocketAddr::new(ip, p.host_port);
    let r = match p.protocol.as_str() {
        "udp" => std::net::UdpSocket::bind(addr).map(drop),
        "tcp" => std::net::TcpListener::bind(addr).map(drop),
        _ => Ok(()),
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::usage(format!(
            "port {}/{} is already in use on the host: pick another host port",
            p.host_port, p.protocol
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod firewall_backend_tests {
    use super::*;

    #[test]
    fn the_runtimes_backend_becomes_each_plugins_key_unless_the_list_sets_one() {
        let mut l = bridge_conflist(
            "n",
            "br-n",
            "10.89.0.0/24".parse().unwrap(),
            None,
            true,
            Path::new("/tmp/ipam"),
        );
        add_portmap(&mut l);
        l.plugins
            .push(json!({"type": "firewall", "backend": "iptables"}));
        l.plugins.push(json!({"type": "tuning"}));
        set_firewall_backend(&mut l, None);
        assert!(l.plugins[0].get("ipMasqBackend").is_none());
        set_firewall_backend(&mut l, Some("nftables"));
        assert_eq!(l.plugins[0]["ipMasqBackend"], "nftables");
        assert_eq!(l.plugins[1]["backend"], "nftables");
        assert_eq!(l.plugins[2]["backend"], "iptables", "an explicit key stays");
        assert!(l.plugins[3].get("backend").is_none());
    }
}
