//! The limits: static keys, or the `bandwidth` capability when there are none, as in the reference.

use crate::Error;
use serde::Deserialize;
use sha2::{Digest, Sha512};

/// Rates in bits per second, bursts in bits; 0 means "no limit in this direction".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    #[serde(default)]
    pub ingress_rate: u64,
    #[serde(default)]
    pub ingress_burst: u64,
    #[serde(default)]
    pub egress_rate: u64,
    #[serde(default)]
    pub egress_burst: u64,
}

impl Limits {
    pub fn ingress(&self) -> Option<(u64, u64)> {
        (self.ingress_rate > 0 && self.ingress_burst > 0)
            .then_some((self.ingress_rate, self.ingress_burst))
    }

    pub fn egress(&self) -> Option<(u64, u64)> {
        (self.egress_rate > 0 && self.egress_burst > 0)
            .then_some((self.egress_rate, self.egress_burst))
    }
}

/// One `bandwidth` entry as written; every key optional so that "present" can be told apart.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    ingress_rate: Option<u64>,
    ingress_burst: Option<u64>,
    egress_rate: Option<u64>,
    egress_burst: Option<u64>,
    #[serde(default)]
    unshaped_subnets: Option<Vec<String>>,
    #[serde(default)]
    shaped_subnets: Option<Vec<String>>,
}

impl Entry {
    fn present(&self) -> bool {
        self.ingress_rate.is_some()
            || self.ingress_burst.is_some()
            || self.egress_rate.is_some()
            || self.egress_burst.is_some()
            || self.unshaped_subnets.is_some()
            || self.shaped_subnets.is_some()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(flatten)]
    entry: Entry,
    #[serde(default)]
    runtime_config: Option<RawRuntime>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRuntime {
    #[serde(default)]
    bandwidth: Option<Entry>,
}

/// The limits to apply. Static keys win whenever any of them is present (even all zero), else the
/// capability is used, as the reference does.
pub fn parse(raw: &serde_json::Value) -> Result<Limits, Error> {
    let conf: RawConf = serde_json::from_value(raw.clone())
        .map_err(|e| Error::Config(format!("invalid bandwidth configuration: {e}")))?;
    let entry = if conf.entry.present() {
        conf.entry
    } else {
        conf.runtime_config
            .and_then(|r| r.bandwidth)
            .unwrap_or_default()
    };
    let subnets = |s: &Option<Vec<String>>| s.as_ref().is_some_and(|v| !v.is_empty());
    if subnets(&entry.unshaped_subnets) || subnets(&entry.shaped_subnets) {
        // The reference's newer htb-based shaping; refusing is better than shaping everything.
        return Err(Error::Unsupported(
            "unshapedSubnets/shapedSubnets are not supported by this bandwidth plugin".into(),
        ));
    }
    let l = Limits {
        ingress_rate: entry.ingress_rate.unwrap_or(0),
        ingress_burst: entry.ingress_burst.unwrap_or(0),
        egress_rate: entry.egress_rate.unwrap_or(0),
        egress_burst: entry.egress_burst.unwrap_or(0),
    };
    check_pair("ingress", l.ingress_rate, l.ingress_burst)?;
    check_pair("egress", l.egress_rate, l.egress_burst)?;
    Ok(l)
}

fn check_pair(dir: &str, rate: u64, burst: u64) -> Result<(), Error> {
    if rate != 0 && burst == 0 {
        return Err(Error::Config(format!(
            "{dir}Rate is set, so {dir}Burst must be set too"
        )));
    }
    if rate == 0 && burst != 0 {
        return Err(Error::Config(format!(
            "{dir}Burst is set, so {dir}Rate must be set too"
        )));
    }
    // The kernel keeps the burst in bytes in 32 bits.
    if burst / 8 >= u64::from(u32::MAX) {
        return Err(Error::Config(format!("{dir}Burst cannot be more than 4GB")));
    }
    if rate != 0 && rate < 8 {
        return Err(Error::Config(format!(
            "{dir}Rate {rate} is below one byte per second"
        )));
    }
    Ok(())
}

/// The ifb device of an attachment: `bwp` + SHA-512(network + container id) in hex, 15 chars, as
/// the reference names it (so DEL finds one the reference made, and the other way round).
pub fn ifb_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("bwp{}", &hex[..12])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn static_wins_over_capability() {
        let l = parse(&json!({"ingressRate": 1000, "ingressBurst": 800,
            "runtimeConfig": {"bandwidth": {"egressRate": 5, "egressBurst": 5}}}))
        .unwrap();
        assert_eq!(l.ingress(), Some((1000, 800)));
        assert_eq!(l.egress(), None);
        let l = parse(
            &json!({"runtimeConfig": {"bandwidth": {"egressRate": 8000, "egressBurst": 80}}}),
        )
        .unwrap();
        assert_eq!(l.egress(), Some((8000, 80)));
        assert_eq!(parse(&json!({})).unwrap(), Limits::default());
    }

    #[test]
    fn validation() {
        assert!(parse(&json!({"ingressRate": 1000})).is_err());
        assert!(parse(&json!({"egressBurst": 1000})).is_err());
        assert!(
            parse(&json!({"egressRate": 1000, "egressBurst": 8u64 * u64::from(u32::MAX)})).is_err()
        );
        assert!(parse(&json!({"egressRate": -1, "egressBurst": 8})).is_err());
        assert!(matches!(
            parse(
                &json!({"egressRate": 1000, "egressBurst": 1000, "shapedSubnets": ["10.0.0.0/8"]})
            ),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn ifb_names_match_the_reference_scheme() {
        let n = ifb_name("mynet", "abc");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("bwp"));
        assert_eq!(n, ifb_name("mynet", "abc"));
        assert_ne!(n, ifb_name("mynet", "abd"));
        // sha512("mynetabc") starts with these hex digits (computed with sha512sum).
        assert_eq!(n, format!("bwp{}", SHA512_MYNETABC_PREFIX));
    }

    const SHA512_MYNETABC_PREFIX: &str = "e88f49d94512";
}
