//! The portmap configuration: the reference's keys, validated before anything touches the kernel.

use std::net::IpAddr;

use cni::{CniResult, Error, Request};
use ipnetwork::IpNetwork;
use serde::Deserialize;
use tether_netfilter::{Family, validate};

/// Kubernetes uses bits 14 and 15, Calico 20 to 31; the reference default is 13.
pub const DEFAULT_MARK_BIT: u32 = 13;

pub use tether_netfilter::{HostIp, Mapping, MarkChain, Proto};

/// The parsed configuration is exactly what the firewall backend publishes from.
pub type Config = tether_netfilter::PortPolicy;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default)]
    snat: Option<bool>,
    #[serde(default)]
    masq_all: Option<bool>,
    #[serde(default)]
    mark_masq_bit: Option<i64>,
    #[serde(default)]
    external_set_mark_chain: Option<String>,
    #[serde(default, rename = "conditionsV4")]
    conditions_v4: Option<Vec<String>>,
    #[serde(default, rename = "conditionsV6")]
    conditions_v6: Option<Vec<String>>,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    runtime_config: Option<RawRuntime>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRuntime {
    #[serde(default)]
    port_mappings: Option<Vec<RawMapping>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMapping {
    #[serde(default)]
    host_port: i64,
    #[serde(default)]
    container_port: i64,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    host_ip: Option<String>,
}

/// Options that would change the meaning of a rule line if they appeared among user conditions:
/// the conditions are matches, the target and the command are ours.
const FORBIDDEN_CONDITION_OPTIONS: &[&str] = &[
    "-j",
    "--jump",
    "-g",
    "--goto",
    "-A",
    "--append",
    "-I",
    "--insert",
    "-D",
    "--delete",
    "-R",
    "--replace",
    "-N",
    "--new-chain",
    "-X",
    "--delete-chain",
    "-F",
    "--flush",
    "-P",
    "--policy",
    "-Z",
    "--zero",
    "-E",
    "--rename-chain",
    "-t",
    "--table",
    "-L",
    "--list",
    "-S",
    "--list-rules",
    "-C",
    "--check",
];

fn parse_conditions(key: &str, raw: Option<Vec<String>>) -> Result<Vec<String>, Error> {
    let tokens = raw.unwrap_or_default();
    if let Some(first) = tokens.first()
        && !(first.starts_with('-') || first.starts_with('!'))
    {
        return Err(Error::invalid_config(format!(
            "{key}: {first:?} looks like nftables syntax; tether's portmap only has the iptables \
             backend, whose conditions start with an option (e.g. [\"-d\", \"192.0.2.1\"])"
        )));
    }
    for t in &tokens {
        validate::token(t).map_err(|e| Error::invalid_config(format!("{key}: {e}")))?;
        if FORBIDDEN_CONDITION_OPTIONS.contains(&t.as_str()) {
            return Err(Error::invalid_config(format!(
                "{key}: option {t:?} is not allowed in conditions (only matches are)"
            )));
        }
    }
    Ok(tokens)
}

fn port(what: &str, p: i64) -> Result<u16, Error> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::invalid_config(format!("invalid {what} port number: {p}")))
}

fn parse_mapping(m: RawMapping) -> Result<Mapping, Error> {
    let host_port = port("host", m.host_port)?;
    let container_port = port("container", m.container_port)?;
    let proto_text = m.protocol.unwrap_or_default();
    let proto = if proto_text.is_empty() {
        Proto::Tcp
    } else {
        Proto::parse(&proto_text).ok_or_else(|| {
            Error::invalid_config(format!(
                "invalid protocol {proto_text:?} for host port {host_port}: expected tcp, udp or sctp"
            ))
        })?
    };
    let host_ip = match m.host_ip.as_deref().unwrap_or("") {
        "" => HostIp::Any,
        s => {
            let ip: IpAddr = s.parse().map_err(|_| {
                Error::invalid_config(format!("invalid hostIP {s:?} for host port {host_port}"))
            })?;
            if ip.is_unspecified() {
                HostIp::AnyOf(Family::from(ip))
            } else {
                HostIp::Addr(ip)
            }
        }
    };
    Ok(Mapping {
        proto,
        host_port,
        container_port,
        host_ip,
    })
}

fn backend_of(raw: &RawConf) -> Result<tether_netfilter::Choice, Error> {
    tether_netfilter::Choice::parse("backend", raw.backend.as_deref())
        .map_err(|e| Error::invalid_config(e.to_string()))
}

/// The firewall backend the config asks for (`backend`: "iptables", "nftables", or absent).
pub fn backend(req: &Request) -> Result<tether_netfilter::Choice, Error> {
    backend_of(&req.conf_as()?)
}

/// Parses and validates the whole configuration. Mappings come only from
/// `runtimeConfig.portMappings`.
pub fn parse(req: &Request) -> Result<Config, Error> {
    let raw: RawConf = req.conf_as()?;
    backend_of(&raw)?;
    let mark = match (raw.mark_masq_bit, raw.external_set_mark_chain) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid_config(
                "cannot specify both externalSetMarkChain and markMasqBit",
            ));
        }
        (_, Some(chain)) => {
            validate::chain(&chain)
                .map_err(|e| Error::invalid_config(format!("externalSetMarkChain: {e}")))?;
            MarkChain::External(chain)
        }
        (bit, None) => {
            let bit = bit.unwrap_or(DEFAULT_MARK_BIT.into());
            if !(0..=31).contains(&bit) {
                return Err(Error::invalid_config(format!(
                    "markMasqBit must be between 0 and 31, got {bit}"
                )));
            }
            MarkChain::Bit(bit as u32)
        }
    };
    let mut mappings: Vec<Mapping> = Vec::new();
    let raw_maps = raw
        .runtime_config
        .unwrap_or_default()
        .port_mappings
        .unwrap_or_default();
    for m in raw_maps {
        let m = parse_mapping(m)?;
        if let Some(dup) = mappings.iter().find(|o| {
            o.proto == m.proto
                && o.host_port == m.host_port
                && Family::ALL
                    .iter()
                    .any(|f| o.host_ip.applies_to(*f) && m.host_ip.applies_to(*f))
                && o.host_ip.overlaps(m.host_ip)
        }) {
            return Err(Error::invalid_config(format!(
                "host port {}/{} is mapped twice (to container ports {} and {})",
                m.host_port,
                m.proto.as_str(),
                dup.container_port,
                m.container_port
            )));
        }
        mappings.push(m);
    }
    Ok(Config {
        snat: raw.snat.unwrap_or(true),
        masq_all: raw.masq_all.unwrap_or(false),
        mark,
        conditions_v4: parse_conditions("conditionsV4", raw.conditions_v4)?,
        conditions_v6: parse_conditions("conditionsV6", raw.conditions_v6)?,
        mappings,
    })
}

/// The container's first IPv4 and first IPv6 address (with prefix) from `prevResult`, skipping
/// addresses that belong to a known interface other than the sandbox's `ifname` (the reference's
/// rule; addresses without an interface index are accepted).
pub fn container_addrs(prev: &CniResult, ifname: &str) -> Vec<IpNetwork> {
    let mut out: Vec<IpNetwork> = Vec::new();
    for ip in &prev.ips {
        if out.iter().any(|a| Family::of(a) == Family::of(&ip.address)) {
            continue;
        }
        if let Some(iface) = ip.interface.and_then(|i| prev.interfaces.get(i))
            && (iface.name != ifname || iface.sandbox.as_deref().unwrap_or("").is_empty())
        {
            continue;
        }
        out.push(ip.address);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::Command;
    use serde_json::json;

    fn req(conf: serde_json::Value) -> Request {
        let env = |k: &str| match k {
            "CNI_CONTAINERID" => Some("c1".to_string()),
            "CNI_IFNAME" => Some("eth0".to_string()),
            _ => None,
        };
        let mut base = json!({"cniVersion": "1.0.0", "name": "n", "type": "portmap"});
        base.as_object_mut()
            .unwrap()
            .extend(conf.as_object().unwrap().clone());
        Request::from_env(Command::Del, &env, serde_json::to_vec(&base).unwrap()).unwrap()
    }

    fn maps(m: serde_json::Value) -> serde_json::Value {
        json!({"runtimeConfig": {"portMappings": m}})
    }

    #[test]
    fn defaults() {
        let c = parse(&req(json!({}))).unwrap();
        assert!(c.snat && !c.masq_all);
        assert_eq!(c.mark, MarkChain::Bit(13));
        assert!(c.mappings.is_empty());
    }

    #[test]
    fn mappings() {
        let c = parse(&req(maps(json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
            {"hostPort": 8080, "containerPort": 80, "protocol": "udp", "hostIP": "127.0.0.1"},
            {"hostPort": 53, "containerPort": 53, "protocol": "sctp", "hostIP": "::"},
            {"hostPort": 9, "containerPort": 9},
        ]))))
        .unwrap();
        assert_eq!(c.mappings[0].proto, Proto::Tcp);
        assert_eq!(
            c.mappings[1].host_ip,
            HostIp::Addr("127.0.0.1".parse().unwrap())
        );
        assert_eq!(c.mappings[2].host_ip, HostIp::AnyOf(Family::V6));
        assert_eq!(c.mappings[3].proto, Proto::Tcp);
        assert!(!c.mappings[2].host_ip.applies_to(Family::V4));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            maps(json!([{"hostPort": 0, "containerPort": 80}])),
            maps(json!([{"hostPort": 70000, "containerPort": 80}])),
            maps(json!([{"hostPort": 80, "containerPort": -1}])),
            maps(json!([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}])),
            maps(json!([{"hostPort": 80, "containerPort": 80, "hostIP": "1.2.3"}])),
            maps(json!([{"hostPort": 80, "containerPort": 80},
                        {"hostPort": 80, "containerPort": 81, "hostIP": "10.0.0.1"}])),
            json!({"markMasqBit": 32}),
            json!({"markMasqBit": 3, "externalSetMarkChain": "X"}),
            json!({"externalSetMarkChain": "BAD CHAIN"}),
            json!({"conditionsV4": ["-d", "1.2.3.4", "-j", "ACCEPT"]}),
            json!({"conditionsV4": ["-s 10.0.0.0/8"]}),
            json!({"conditionsV4": ["-m", "comment", "--comment", "\"x\ny\""]}),
            json!({"conditionsV6": ["ip6", "daddr", "::1"]}),
            json!({"backend": "ebpf"}),
            json!({"backend": "firewalld"}),
        ] {
            let e = parse(&req(bad.clone())).unwrap_err();
            assert_eq!(e.code, 7, "{bad}: {e}");
        }
        let ok = parse(&req(json!({"conditionsV4": ["!", "-s", "10.0.0.0/8"]}))).unwrap();
        assert_eq!(ok.conditions(Family::V4).len(), 3);
        // Same port on two distinct addresses, or two protocols, is fine.
        parse(&req(maps(json!([
            {"hostPort": 80, "containerPort": 80, "hostIP": "10.0.0.1"},
            {"hostPort": 80, "containerPort": 80, "hostIP": "10.0.0.2"},
            {"hostPort": 80, "containerPort": 80, "protocol": "udp"},
        ]))))
        .unwrap();
    }

    #[test]
    fn picks_the_sandbox_addresses() {
        let prev = CniResult::from_json(&json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "br0"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [
                {"address": "10.1.0.1/24", "interface": 0},
                {"address": "10.1.0.5/24", "interface": 1},
                {"address": "10.1.0.6/24", "interface": 1},
                {"address": "fd00::5/64"},
            ]
        }))
        .unwrap();
        let a = container_addrs(&prev, "eth0");
        assert_eq!(
            a,
            vec![
                "10.1.0.5/24".parse().unwrap(),
                "fd00::5/64".parse().unwrap()
            ]
        );
        assert!(container_addrs(&prev, "eth1").len() == 1);
    }
}
