//! What ADD will write and return, computed from the config and `prevResult` alone (pure).
//!
//! ```text
//!  prevResult.ips[].address ─► the entry's addresses (what A/AAAA/PTR answer)
//!  prevResult.ips[].gateway ─► the server's listen addresses (deduplicated, in order)
//!  listen + prevResult.dns  ─► result.dns: our gateways first, then what was there;
//!                              search: what was there, then domainName (as dnsname)
//! ```

use std::net::IpAddr;

use cni::{CniResult, Dns, Error};
use tether_dns_state::{Entry, ServerConfig};
use tether_kit::Error as KitError;

use crate::config::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub entry: Entry,
    pub server: ServerConfig,
    pub result: CniResult,
}

pub fn plan(
    conf: &Config,
    names: Vec<String>,
    container_id: &str,
    ifname: &str,
    prev: &CniResult,
) -> Result<Plan, Error> {
    let ips: Vec<IpAddr> = prev.ips.iter().map(|c| c.address.ip()).collect();
    let mut listen: Vec<IpAddr> = Vec::new();
    for gw in prev.ips.iter().filter_map(|c| c.gateway) {
        if !listen.contains(&gw) {
            listen.push(gw);
        }
    }
    if listen.is_empty() {
        return Err(KitError::Config(
            "dnsname needs a gateway in prevResult (the DNS server listens on it): chain it after bridge with isGateway".into(),
        )
        .into());
    }
    let mut dns = Dns {
        nameservers: listen.iter().map(IpAddr::to_string).collect(),
        ..prev.dns.clone()
    };
    for ns in &prev.dns.nameservers {
        if !dns.nameservers.contains(ns) {
            dns.nameservers.push(ns.clone());
        }
    }
    if !dns.search.contains(&conf.domain) {
        dns.search.push(conf.domain.clone());
    }
    let mut result = prev.clone();
    result.dns = dns;
    Ok(Plan {
        entry: Entry {
            container_id: container_id.into(),
            ifname: ifname.into(),
            names,
            ips,
        },
        server: ServerConfig {
            listen,
            port: 53,
            domain: conf.domain.clone(),
            resolv_conf: conf.resolv_conf.clone(),
        },
        result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prev(v: serde_json::Value) -> CniResult {
        serde_json::from_value(v).unwrap()
    }

    fn conf() -> Config {
        Config {
            network: "n".into(),
            domain: "dns.tether".into(),
            data_dir: "/run/tether/dns".into(),
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }

    #[test]
    fn gateways_become_the_nameservers_and_the_domain_is_searched() {
        let p = prev(json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 0},
                    {"address": "fd00::2/64", "gateway": "fd00::1", "interface": 0}],
            "dns": {"nameservers": ["192.0.2.1"], "search": ["example.com"]}}));
        let plan = plan(&conf(), vec!["web".into()], "c1", "eth0", &p).unwrap();
        assert_eq!(plan.entry.ips.len(), 2);
        assert_eq!(plan.server.listen.len(), 2);
        assert_eq!(
            plan.result.dns.nameservers,
            vec!["10.1.0.1", "fd00::1", "192.0.2.1"]
        );
        assert_eq!(plan.result.dns.search, vec!["example.com", "dns.tether"]);
        assert_eq!(plan.result.ips, p.ips);
    }

    #[test]
    fn a_result_without_gateway_is_refused() {
        let p = prev(json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/24"}]}));
        let e = plan(&conf(), vec![], "c1", "eth0", &p).unwrap_err();
        assert_eq!(e.code, 7);
    }
}
