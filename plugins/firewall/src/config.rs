//! The firewall configuration (the reference's keys; `backend` picks iptables or nftables).

use cni::Error;
use serde::Deserialize;
use tether_netfilter::validate;

pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";

pub use tether_netfilter::IngressPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `backend`: "iptables", "nftables", or "" / absent (the netfilter library's policy).
    pub backend: tether_netfilter::Choice,
    pub admin_chain: String,
    pub ingress: IngressPolicy,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    iptables_admin_chain_name: Option<String>,
    #[serde(default)]
    ingress_policy: Option<String>,
}

pub fn parse(req: &cni::Request) -> Result<Config, Error> {
    let raw: RawConf = req.conf_as()?;
    let backend = tether_netfilter::Choice::parse("backend", raw.backend.as_deref())
        .map_err(|e| Error::invalid_config(e.to_string()))?;
    let admin_chain = match raw.iptables_admin_chain_name.as_deref() {
        None | Some("") => DEFAULT_ADMIN_CHAIN.to_string(),
        Some(c) => {
            validate::chain(c)
                .map_err(|e| Error::invalid_config(format!("iptablesAdminChainName: {e}")))?;
            c.to_string()
        }
    };
    let ingress = match raw.ingress_policy.as_deref() {
        None | Some("") | Some("open") => IngressPolicy::Open,
        Some("same-bridge") => IngressPolicy::SameBridge,
        Some("isolated") => IngressPolicy::Isolated,
        Some(other) => {
            return Err(Error::invalid_config(format!(
                "unknown ingressPolicy {other:?}: expected \"open\", \"same-bridge\" or \"isolated\""
            )));
        }
    };
    Ok(Config {
        backend,
        admin_chain,
        ingress,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(extra: serde_json::Value) -> cni::Request {
        let env = |k: &str| match k {
            "CNI_CONTAINERID" => Some("c1".to_string()),
            "CNI_IFNAME" => Some("eth0".to_string()),
            _ => None,
        };
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall"});
        conf.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        cni::Request::from_env(cni::Command::Del, &env, conf.to_string().into_bytes()).unwrap()
    }

    #[test]
    fn keys() {
        let c = parse(&req(json!({}))).unwrap();
        assert_eq!(c.admin_chain, "CNI-ADMIN");
        assert_eq!(c.ingress, IngressPolicy::Open);
        let c = parse(&req(
            json!({"backend": "iptables", "iptablesAdminChainName": "MY-ADMIN",
                                  "ingressPolicy": "isolated"}),
        ))
        .unwrap();
        assert_eq!(c.admin_chain, "MY-ADMIN");
        assert_eq!(c.backend, tether_netfilter::Choice::Iptables);
        for (b, want) in [
            ("nftables", tether_netfilter::Choice::Nftables),
            ("", tether_netfilter::Choice::Auto),
        ] {
            assert_eq!(parse(&req(json!({"backend": b}))).unwrap().backend, want);
        }
        assert_eq!(c.ingress, IngressPolicy::Isolated);
        for bad in [
            json!({"backend": "firewalld"}),
            json!({"backend": "pf"}),
            json!({"iptablesAdminChainName": "A B"}),
            json!({"iptablesAdminChainName": "-F"}),
            json!({"ingressPolicy": "closed"}),
        ] {
            assert_eq!(parse(&req(bad.clone())).unwrap_err().code, 7, "{bad}");
        }
    }
}
