//! The overlay plugin's configuration: `{"type": "overlay", "network": NAME}` plus a few
//! optional keys, parsed once (a parse DEL tolerates) and validated only for ADD.
//!
//! ```text
//!  key           default   what
//!  network       required  the overlay network (as `tether overlay init NAME`): its state dir
//!  ipMasq        true      masquerade what containers send out of the overlay (never to it)
//!  ipMasqBackend policy    "iptables" / "nftables" / "" for that masquerading (as bridge's key)
//!  mtu           lease's   container and bridge MTU; not above the lease's (the VXLAN's)
//!  hairpinMode   true      containers reach themselves through the bridge
//!  dns           -         passed to the delegate (the result's DNS)
//! ```

use cni::{Error, ErrorCode, Request};
use tether_kit::config::field;
use tether_overlay_state::HostLease;

/// Keys the overlay decides itself: refused (code 2) rather than silently overridden.
const DECIDED_BY_THE_OVERLAY: &[&str] = &["bridge", "ipam", "isGateway", "isDefaultGateway"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `network` as written (validated by [`Config::validate`]; DEL and GC tolerate a bad one).
    pub network: Option<String>,
    pub ip_masq: bool,
    /// `None` (or 0): the lease's MTU.
    pub mtu: Option<u32>,
    pub hairpin_mode: bool,
    /// The firewall backend for the masquerading (`ipMasqBackend`, as on bridge).
    pub firewall: tether_netfilter::Choice,
    /// Why `ipMasqBackend` was refused: ADD fails with it (code 7), DEL and GC use the policy.
    firewall_error: Option<String>,
    decided: Vec<&'static str>,
}

impl Config {
    /// Only a value of the wrong type fails here (code 7).
    pub fn parse(req: &Request) -> Result<Config, Error> {
        let raw = &req.raw;
        let backend: Option<String> = field(raw, "ipMasqBackend")?;
        let (firewall, firewall_error) =
            match tether_netfilter::Choice::parse("ipMasqBackend", backend.as_deref()) {
                Ok(c) => (c, None),
                Err(e) => (tether_netfilter::Choice::Auto, Some(e.to_string())),
            };
        Ok(Config {
            firewall,
            firewall_error,
            network: field(raw, "network")?,
            ip_masq: field(raw, "ipMasq")?.unwrap_or(true),
            mtu: field::<u32>(raw, "mtu")?.filter(|m| *m != 0),
            hairpin_mode: field(raw, "hairpinMode")?.unwrap_or(true),
            decided: DECIDED_BY_THE_OVERLAY
                .iter()
                .copied()
                .filter(|k| raw.get(*k).is_some_and(|v| !v.is_null()))
                .collect(),
        })
    }

    /// The network's name, when it can name a state directory: DEL, CHECK and GC act only then
    /// (an ADD with any other name was refused, so it created nothing).
    pub fn usable_network(&self) -> Option<&str> {
        self.network
            .as_deref()
            .filter(|n| tether_overlay_state::validate_name(n).is_ok())
    }

    /// What ADD needs beyond parsing; the lease-dependent checks are [`Config::check_lease`].
    pub fn validate(&self) -> Result<&str, Error> {
        let network = self.network.as_deref().ok_or_else(|| {
            Error::invalid_config(
                "missing \"network\": the overlay plugin needs the overlay network's name, as given to `tether overlay init`",
            )
        })?;
        tether_overlay_state::validate_name(network)
            .map_err(|e| Error::invalid_config(format!("invalid \"network\": {e}")))?;
        if let Some(key) = self.decided.first() {
            return Err(Error::new(
                ErrorCode::UnsupportedField,
                format!(
                    "unsupported field \"{key}\": the overlay plugin derives it from the agent's lease"
                ),
            ));
        }
        if let Some(e) = &self.firewall_error {
            return Err(Error::invalid_config(e.clone()));
        }
        if let Some(mtu) = self.mtu
            && mtu < 68
        {
            return Err(Error::invalid_config(format!(
                "invalid \"mtu\": {mtu} (must be at least 68)"
            )));
        }
        Ok(network)
    }

    /// The MTU the containers get: ours when set, which may not exceed the lease's (a larger
    /// one would be dropped by the VXLAN device, silently for TCP without PMTU discovery).
    pub fn mtu_for(&self, lease: &HostLease) -> Result<u32, Error> {
        match self.mtu {
            Some(m) if m > lease.mtu => Err(Error::invalid_config(format!(
                "invalid \"mtu\": {m} is above the overlay's {} ({}): use at most {}",
                lease.mtu,
                // host-gw adds no header: its lease carries the underlay's MTU unchanged.
                if lease.backend == "host-gw" {
                    "the underlay's MTU: host-gw adds no header"
                } else {
                    "the underlay's MTU minus the VXLAN header"
                },
                lease.mtu
            ))),
            Some(m) => Ok(m),
            None => Ok(lease.mtu),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{lease, req};

    #[test]
    fn defaults() {
        let c = Config::parse(&req(r#","network":"ov1""#)).unwrap();
        assert!(c.ip_masq && c.hairpin_mode);
        assert_eq!(c.validate().unwrap(), "ov1");
        assert_eq!(c.mtu_for(&lease(1450)).unwrap(), 1450);
    }

    #[test]
    fn missing_or_bad_network_is_code_7_for_add_and_tolerated_by_parse() {
        for extra in ["", r#","network":"../etc""#, r#","network":"""#] {
            let c = Config::parse(&req(extra)).unwrap();
            assert_eq!(c.usable_network(), None, "{extra}");
            let e = c.validate().unwrap_err();
            assert_eq!(e.code, 7, "{extra}");
            assert!(e.msg.contains("network"), "{}", e.msg);
        }
        assert_eq!(Config::parse(&req(r#","network":7"#)).unwrap_err().code, 7);
    }

    #[test]
    fn mtu_may_not_exceed_the_lease() {
        let c = Config::parse(&req(r#","network":"ov1","mtu":1400"#)).unwrap();
        assert_eq!(c.mtu_for(&lease(1450)).unwrap(), 1400);
        let e = c.mtu_for(&lease(1350)).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("1350"), "{}", e.msg);
        assert!(e.msg.contains("VXLAN header"), "{}", e.msg);
        let mut gw = lease(1500);
        gw.backend = "host-gw".into();
        let c = Config::parse(&req(r#","network":"ov1","mtu":9000"#)).unwrap();
        let e = c.mtu_for(&gw).unwrap_err();
        assert!(
            e.msg.contains("1500") && e.msg.contains("host-gw adds no header"),
            "{}",
            e.msg
        );
        let c = Config::parse(&req(r#","network":"ov1","mtu":20"#)).unwrap();
        assert_eq!(c.validate().unwrap_err().code, 7);
    }

    #[test]
    fn ip_masq_backend_takes_the_bridges_names_and_refuses_others_for_add_only() {
        use tether_netfilter::Choice;
        for (v, want) in [
            ("nftables", Choice::Nftables),
            ("iptables", Choice::Iptables),
            ("", Choice::Auto),
        ] {
            let c =
                Config::parse(&req(&format!(r#","network":"ov1","ipMasqBackend":"{v}""#))).unwrap();
            assert_eq!(c.firewall, want, "{v}");
            c.validate().unwrap();
        }
        let c = Config::parse(&req(r#","network":"ov1","ipMasqBackend":"pf""#)).unwrap();
        assert_eq!(
            c.firewall,
            Choice::Auto,
            "DEL and GC fall back to the policy"
        );
        let e = c.validate().unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("ipMasqBackend"), "{}", e.msg);
    }

    #[test]
    fn keys_the_overlay_decides_are_refused_with_code_2() {
        for extra in [r#","bridge":"br0""#, r#","ipam":{"type":"dhcp"}"#] {
            let c = Config::parse(&req(&format!(r#","network":"ov1"{extra}"#))).unwrap();
            assert_eq!(c.validate().unwrap_err().code, 2, "{extra}");
        }
    }
}
