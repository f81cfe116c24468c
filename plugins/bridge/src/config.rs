//! The bridge plugin's configuration: the reference plugin's keys with its defaults, parsed once
//! and validated before anything touches the kernel.

use cni::{Dns, Error, ErrorCode, Request};
use serde_json::Value;
use tether_kit::config::field;

/// The reference plugin's default bridge name.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// A parsed configuration with the defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The network name (`name`): part of every record we leave behind (masquerade comments,
    /// host veth aliases).
    pub network: String,
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    /// MTU for a bridge we create and for both veth ends; `None` (or 0 in the JSON) leaves the
    /// kernel default.
    pub mtu: Option<u32>,
    pub hairpin_mode: bool,
    pub promisc_mode: bool,
    pub enable_dad: bool,
    pub port_isolation: bool,
    pub disable_container_interface: bool,
    /// The IPAM plugin's type; `None` for an L2-only network (no `ipam` or an empty `type`).
    pub ipam: Option<String>,
    /// DNS from the config; when set it replaces the IPAM's DNS in the result.
    pub dns: Option<Dns>,
    /// The container interface's MAC (`CNI_ARGS MAC`, `args.cni.mac`, `runtimeConfig.mac`).
    pub mac: Option<[u8; 6]>,
    /// The firewall backend for ipMasq (`ipMasqBackend`; see `tether_netfilter::select_for`).
    pub firewall: tether_netfilter::Choice,
    /// Why `ipMasqBackend` was refused: ADD fails with it (code 7), DEL and GC use the policy.
    firewall_error: Option<String>,
    /// Keys we accept but cannot honour, with the reason; ADD refuses them (see [`Config::validate`]).
    unsupported: Vec<String>,
}

impl Config {
    /// Parses the keys. Only a malformed document fails here (code 7), so DEL and GC work for any
    /// configuration that ADD might have refused.
    pub fn parse(req: &Request) -> Result<Config, Error> {
        let raw = &req.raw;
        let flag = |key: &str| field::<bool>(raw, key).map(|v| v.unwrap_or(false));
        let is_default_gateway = flag("isDefaultGateway")?;
        let vlan: Option<i64> = field(raw, "vlan")?;
        let vlan_trunk: Option<Vec<Value>> = field(raw, "vlanTrunk")?;
        let ip_masq_backend: Option<String> = field(raw, "ipMasqBackend")?;
        let mut unsupported = Vec::new();
        if let Some(v) = vlan.filter(|v| *v != 0) {
            unsupported.push(format!("\"vlan\": {v}"));
        }
        if vlan_trunk.as_ref().is_some_and(|t| !t.is_empty()) {
            unsupported.push("\"vlanTrunk\"".to_string());
        }
        if flag("macspoofchk")? {
            unsupported.push("\"macspoofchk\": true".to_string());
        }
        let (firewall, firewall_error) =
            match tether_netfilter::Choice::parse("ipMasqBackend", ip_masq_backend.as_deref()) {
                Ok(c) => (c, None),
                Err(e) => (tether_netfilter::Choice::Auto, Some(e.to_string())),
            };
        let ipam = req
            .conf
            .ipam
            .as_ref()
            .map(|i| i.plugin_type.clone())
            .filter(|t| !t.is_empty());
        let mac = req
            .requested_mac()
            .map(|m| parse_mac(&m).map_err(Error::invalid_config))
            .transpose()?;
        Ok(Config {
            network: req.conf.name.clone(),
            bridge: field(raw, "bridge")?.unwrap_or_else(|| DEFAULT_BRIDGE.to_string()),
            is_gateway: flag("isGateway")? || is_default_gateway,
            is_default_gateway,
            force_address: flag("forceAddress")?,
            ip_masq: flag("ipMasq")?,
            mtu: field::<u32>(raw, "mtu")?.filter(|m| *m != 0),
            hairpin_mode: flag("hairpinMode")?,
            promisc_mode: flag("promiscMode")?,
            enable_dad: flag("enabledad")?,
            port_isolation: flag("portIsolation")?,
            disable_container_interface: flag("disableContainerInterface")?,
            ipam,
            dns: req.conf.dns.clone().filter(|d| !d.is_empty()),
            mac,
            firewall,
            firewall_error,
            unsupported,
        })
    }

    /// Everything ADD needs beyond [`Config::parse`]: names the kernel would reject, combinations
    /// the reference rejects, and keys we do not implement (refused rather than silently ignored:
    /// a VLAN or anti-spoofing setting that does nothing would be a silent security hole).
    pub fn validate(&self) -> Result<(), Error> {
        cni::types::validate_ifname(&self.bridge)
            .map_err(|e| Error::invalid_config(format!("invalid \"bridge\": {e}")))?;
        if let Some(e) = &self.firewall_error {
            return Err(Error::invalid_config(e.clone()));
        }
        if let Some(key) = self.unsupported.first() {
            return Err(Error::new(
                ErrorCode::UnsupportedField,
                format!("unsupported field {key}: Tether's bridge plugin does not implement it"),
            ));
        }
        if self.hairpin_mode && self.promisc_mode {
            return Err(Error::invalid_config(
                "cannot set hairpinMode and promiscMode at the same time",
            ));
        }
        if self.disable_container_interface && self.ipam.is_some() {
            return Err(Error::invalid_config(
                "disableContainerInterface cannot be used with ipam: addresses on a down interface are useless",
            ));
        }
        if let Some(mtu) = self.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(Error::invalid_config(format!(
                "invalid \"mtu\": {mtu} (must be between 68 and 65535)"
            )));
        }
        Ok(())
    }
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`), which must be a usable unicast address.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad =
        || format!("invalid MAC address {s:?}: expected six hex pairs like 02:42:ac:11:00:02");
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 || mac == [0; 6] {
        return Err(format!(
            "invalid MAC address {s:?}: a container interface needs a unicast, non-zero address"
        ));
    }
    Ok(mac)
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::request::Command;
    use std::collections::HashMap;

    fn req(conf: &str, cni_args: &str) -> Request {
        let mut env: HashMap<&str, String> = HashMap::new();
        env.insert("CNI_CONTAINERID", "c1".into());
        env.insert("CNI_IFNAME", "eth0".into());
        env.insert("CNI_ARGS", cni_args.into());
        Request::from_env(
            Command::Del,
            &|k| env.get(k).cloned(),
            conf.as_bytes().to_vec(),
        )
        .unwrap()
    }

    fn conf(extra: &str) -> String {
        format!(r#"{{"cniVersion":"1.0.0","name":"net1","type":"bridge"{extra}}}"#)
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = Config::parse(&req(&conf(""), "")).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.is_default_gateway && !c.ip_masq && !c.force_address);
        assert!(!c.enable_dad && !c.hairpin_mode && !c.promisc_mode);
        assert_eq!(c.mtu, None);
        assert_eq!(c.ipam, None);
        assert_eq!(c.mac, None);
        c.validate().unwrap();
    }

    #[test]
    fn nulls_are_absent_and_mtu_zero_is_default() {
        let c = Config::parse(&req(
            &conf(r#","bridge":null,"isGateway":null,"mtu":0,"ipam":{}"#),
            "",
        ))
        .unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway);
        assert_eq!(c.mtu, None);
        assert_eq!(c.ipam, None, "an ipam without type is L2-only");
    }

    #[test]
    fn default_gateway_implies_gateway() {
        let c = Config::parse(&req(&conf(r#","isDefaultGateway":true"#), "")).unwrap();
        assert!(c.is_gateway && c.is_default_gateway);
    }

    #[test]
    fn bridge_names_are_checked_for_add_only() {
        let long = conf(r#","bridge":"a-very-long-bridge-name""#);
        let c = Config::parse(&req(&long, "")).unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.contains("bridge") && e.msg.contains("at most 15"),
            "{}",
            e.msg
        );
        for bad in [r#""""#, r#""a/b""#, r#""a b""#] {
            let c = Config::parse(&req(&conf(&format!(r#","bridge":{bad}"#)), "")).unwrap();
            assert_eq!(c.validate().unwrap_err().code, 7, "{bad}");
        }
    }

    #[test]
    fn malformed_values_are_code_7() {
        for (extra, key) in [
            (r#","mtu":"big""#, "\"mtu\": \"big\""),
            (r#","mtu":-1"#, "\"mtu\": -1"),
            (r#","isGateway":"yes""#, "\"isGateway\": \"yes\""),
        ] {
            let e = Config::parse(&req(&conf(extra), "")).unwrap_err();
            assert_eq!(e.code, 7, "{extra}");
            assert!(e.msg.contains(key), "{extra}: {}", e.msg);
        }
        let c = Config::parse(&req(&conf(r#","mtu":20"#), "")).unwrap();
        assert_eq!(c.validate().unwrap_err().code, 7);
    }

    #[test]
    fn rejected_combinations_and_unsupported_keys() {
        let c =
            Config::parse(&req(&conf(r#","hairpinMode":true,"promiscMode":true"#), "")).unwrap();
        assert_eq!(c.validate().unwrap_err().code, 7);
        let c = Config::parse(&req(
            &conf(r#","disableContainerInterface":true,"ipam":{"type":"host-local"}"#),
            "",
        ))
        .unwrap();
        assert_eq!(c.validate().unwrap_err().code, 7);
        for extra in [
            r#","vlan":100"#,
            r#","vlanTrunk":[{"id":5}]"#,
            r#","macspoofchk":true"#,
        ] {
            let c = Config::parse(&req(&conf(extra), "")).unwrap();
            let e = c.validate().unwrap_err();
            assert_eq!(e.code, 2, "{extra}: {}", e.msg);
        }
        for extra in [
            r#","vlan":0"#,
            r#","vlanTrunk":[]"#,
            r#","ipMasqBackend":"nftables""#,
            r#","ipMasqBackend":"iptables""#,
        ] {
            Config::parse(&req(&conf(extra), ""))
                .unwrap()
                .validate()
                .unwrap();
        }
    }

    #[test]
    fn ip_masq_backend_selects_the_firewall_and_unknown_names_are_code_7() {
        use tether_netfilter::Choice;
        for (extra, want) in [
            ("", Choice::Auto),
            (r#","ipMasqBackend":"nftables""#, Choice::Nftables),
            (r#","ipMasqBackend":"iptables""#, Choice::Iptables),
        ] {
            assert_eq!(
                Config::parse(&req(&conf(extra), "")).unwrap().firewall,
                want
            );
        }
        for extra in [
            r#","ipMasqBackend":"pf""#,
            r#","ipMasqBackend":"firewalld""#,
        ] {
            let c = Config::parse(&req(&conf(extra), "")).unwrap();
            let e = c.validate().unwrap_err();
            assert_eq!(e.code, 7, "{extra}: {}", e.msg);
            assert!(e.msg.contains("ipMasqBackend"), "{}", e.msg);
        }
    }

    #[test]
    fn mac_precedence_and_validation() {
        let c = Config::parse(&req(&conf(""), "MAC=02:00:00:00:00:01")).unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 1]));
        let c = Config::parse(&req(
            &conf(r#","args":{"cni":{"mac":"02:00:00:00:00:02"}}"#),
            "MAC=02:00:00:00:00:01",
        ))
        .unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 2]));
        let c = Config::parse(&req(
            &conf(
                r#","args":{"cni":{"mac":"02:00:00:00:00:02"}},"runtimeConfig":{"mac":"02-00-00-00-00-03"}"#,
            ),
            "",
        ))
        .unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 3]));
        for bad in [
            "nope",
            "01:00:00:00:00:01",
            "00:00:00:00:00:00",
            "2:0:0:0:0:1",
        ] {
            let e = Config::parse(&req(&conf(""), &format!("MAC={bad}"))).unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
        }
        assert_eq!(format_mac([2, 0xab, 0, 0, 0, 1]), "02:ab:00:00:00:01");
    }

    #[test]
    fn dns_only_when_set() {
        let c = Config::parse(&req(&conf(r#","dns":{}"#), "")).unwrap();
        assert_eq!(c.dns, None);
        let c = Config::parse(&req(&conf(r#","dns":{"nameservers":["10.0.0.1"]}"#), "")).unwrap();
        assert_eq!(c.dns.unwrap().nameservers, vec!["10.0.0.1".to_string()]);
    }
}
