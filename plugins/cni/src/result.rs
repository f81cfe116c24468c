//! The result model (spec 1.1.0) and its conversion from and to every spec version.
//!
//! Internally a result is always the 1.1.0 shape. [`CniResult::from_json`] accepts any version
//! (`ip4`/`ip6` below 0.3.0, `ips` with or without `version` above), and [`CniResult::to_json`]
//! writes exactly the fields the requested version knows.

use crate::error::{Error, ErrorCode};
use crate::result_check;
use crate::version;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with the prefix length of its subnet, e.g. `10.88.0.5/16`.
    #[serde(deserialize_with = "cidr")]
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    #[serde(deserialize_with = "cidr")]
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A CIDR with its prefix length (see [`result_check::parse_cidr`]): also for results built by
/// serde directly, without [`CniResult::from_json`].
fn cidr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IpNetwork, D::Error> {
    let s = String::deserialize(d)?;
    result_check::parse_cidr(&s).map_err(serde::de::Error::custom)
}

fn decode_err(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::DecodingFailure,
        format!("invalid result: {what}"),
    )
}

/// The legacy (0.1.0/0.2.0) per-family block.
#[derive(Deserialize)]
struct LegacyIp {
    #[serde(deserialize_with = "cidr")]
    ip: IpNetwork,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<LegacyRoute>,
}

#[derive(Deserialize)]
struct LegacyRoute {
    #[serde(deserialize_with = "cidr")]
    dst: IpNetwork,
    #[serde(default)]
    gw: Option<IpAddr>,
}

impl CniResult {
    /// Parses a result of any spec version. The version is taken from `cniVersion`; a result
    /// without one is read by its shape. Every field is checked first (see [`result_check`]):
    /// a bad one is code 6, with a message naming it.
    pub fn from_json(v: &Value) -> Result<CniResult, Error> {
        let obj = v
            .as_object()
            .ok_or_else(|| decode_err("not a JSON object"))?;
        let ver = obj
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let legacy = if ver.is_empty() {
            obj.contains_key("ip4") || obj.contains_key("ip6")
        } else {
            version::is_legacy_result(&ver)
        };
        if legacy {
            result_check::check_legacy(obj).map_err(decode_err)?;
            let mut r = CniResult {
                cni_version: ver,
                ..Default::default()
            };
            for key in ["ip4", "ip6"] {
                if let Some(block) = obj.get(key).filter(|b| !b.is_null()) {
                    let b: LegacyIp = serde_json::from_value(block.clone()).map_err(decode_err)?;
                    r.ips.push(IpConfig {
                        address: b.ip,
                        gateway: b.gateway,
                        interface: None,
                    });
                    r.routes
                        .extend(b.routes.into_iter().map(|rt| Route::new(rt.dst, rt.gw)));
                }
            }
            if let Some(dns) = obj.get("dns").filter(|d| !d.is_null()) {
                r.dns = serde_json::from_value(dns.clone()).map_err(decode_err)?;
            }
            return Ok(r);
        }
        result_check::check(obj).map_err(decode_err)?;
        // `ips[].version` (0.3.x/0.4.0) is ignored by serde: the address says the family.
        let mut r: CniResult = serde_json::from_value(v.clone()).map_err(decode_err)?;
        // Go's `omitempty` writes an empty MAC as none.
        for i in &mut r.interfaces {
            i.mac = i.mac.take().filter(|m| !m.is_empty());
        }
        Ok(r)
    }

    /// Writes the result in the shape of `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        if version::is_legacy_result(cni_version) {
            return self.to_legacy_json(cni_version);
        }
        let with_version_field = !version::at_least(cni_version, "1.0.0");
        let v11 = version::at_least(cni_version, "1.1.0");
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), json!(i.name));
                if let Some(mac) = &i.mac {
                    o.insert("mac".into(), json!(mac));
                }
                if let Some(mtu) = i.mtu.filter(|_| v11) {
                    o.insert("mtu".into(), json!(mtu));
                }
                if let Some(s) = &i.sandbox {
                    o.insert("sandbox".into(), json!(s));
                }
                if v11 {
                    if let Some(s) = &i.socket_path {
                        o.insert("socketPath".into(), json!(s));
                    }
                    if let Some(s) = &i.pci_id {
                        o.insert("pciID".into(), json!(s));
                    }
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if with_version_field {
                    o.insert(
                        "version".into(),
                        json!(if ip.address.is_ipv4() { "4" } else { "6" }),
                    );
                }
                if let Some(i) = ip.interface {
                    o.insert("interface".into(), json!(i));
                }
                o.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), json!(gw.to_string()));
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                if v11 {
                    serde_json::to_value(r).expect("route serializes")
                } else {
                    let mut o = Map::new();
                    o.insert("dst".into(), json!(r.dst.to_string()));
                    if let Some(gw) = r.gw {
                        o.insert("gw".into(), json!(gw.to_string()));
                    }
                    Value::Object(o)
                }
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(cni_version));
        if !interfaces.is_empty() {
            out.insert("interfaces".into(), Value::Array(interfaces));
        }
        if !ips.is_empty() {
            out.insert("ips".into(), Value::Array(ips));
        }
        if !routes.is_empty() {
            out.insert("routes".into(), Value::Array(routes));
        }
        out.insert(
            "dns".into(),
            serde_json::to_value(&self.dns).expect("dns serializes"),
        );
        Value::Object(out)
    }

    fn to_legacy_json(&self, cni_version: &str) -> Value {
        // As the reference converts down: the first address of each family, with the routes of
        // that family.
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(cni_version));
        for (key, v4) in [("ip4", true), ("ip6", false)] {
            let Some(ip) = self.ips.iter().find(|i| i.address.is_ipv4() == v4) else {
                continue;
            };
            let mut block = Map::new();
            block.insert("ip".into(), json!(ip.address.to_string()));
            if let Some(gw) = ip.gateway {
                block.insert("gateway".into(), json!(gw.to_string()));
            }
            let routes: Vec<Value> = self
                .routes
                .iter()
                .filter(|r| r.dst.is_ipv4() == v4)
                .map(|r| {
                    let mut o = Map::new();
                    o.insert("dst".into(), json!(r.dst.to_string()));
                    if let Some(gw) = r.gw {
                        o.insert("gw".into(), json!(gw.to_string()));
                    }
                    Value::Object(o)
                })
                .collect();
            if !routes.is_empty() {
                block.insert("routes".into(), Value::Array(routes));
            }
            out.insert(key.into(), Value::Object(block));
        }
        out.insert(
            "dns".into(),
            serde_json::to_value(&self.dns).expect("dns serializes"),
        );
        Value::Object(out)
    }

    /// Index of the interface named `name` in the given sandbox (None = host side).
    pub fn interface_index(&self, name: &str, sandbox: Option<&str>) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name == name && i.sandbox.as_deref() == sandbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: Some("aa:bb:cc:dd:ee:ff".into()),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(1500),
                    sandbox: Some("/run/netns/x".into()),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.1.0.5/16".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: Some("fd00::1".parse().unwrap()),
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                mtu: Some(1400),
                ..Route::new(
                    "0.0.0.0/0".parse().unwrap(),
                    Some("10.1.0.1".parse().unwrap()),
                )
            }],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn round_trip_every_version() {
        let r = sample();
        for v in version::ALL {
            let j = r.to_json(v);
            assert_eq!(j["cniVersion"], *v);
            let back = CniResult::from_json(&j).unwrap();
            assert_eq!(back.ips.len(), 2, "{v}: {j}");
            assert_eq!(back.ips[0].address, r.ips[0].address);
            assert_eq!(back.dns, r.dns);
            if version::at_least(v, "0.3.0") {
                assert_eq!(back.interfaces.len(), 2);
                assert_eq!(back.ips[0].interface, Some(1));
            }
        }
    }

    #[test]
    fn version_specific_fields() {
        let r = sample();
        let v02 = r.to_json("0.2.0");
        assert_eq!(v02["ip4"]["ip"], "10.1.0.5/16");
        assert_eq!(v02["ip6"]["gateway"], "fd00::1");
        assert_eq!(v02["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
        assert!(v02.get("ips").is_none());
        let v04 = r.to_json("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][1]["version"], "6");
        assert!(v04["interfaces"][1].get("mtu").is_none());
        assert!(v04["routes"][0].get("mtu").is_none());
        let v10 = r.to_json("1.0.0");
        assert!(v10["ips"][0].get("version").is_none());
        assert!(v10["routes"][0].get("mtu").is_none());
        let v11 = r.to_json("1.1.0");
        assert_eq!(v11["interfaces"][1]["mtu"], 1500);
        assert_eq!(v11["routes"][0]["mtu"], 1400);
        assert_eq!(v11["dns"]["nameservers"][0], "10.1.0.1");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            CniResult::from_json(&json!([1])).unwrap_err().code,
            ErrorCode::DecodingFailure as u32
        );
        let bad = json!({"cniVersion": "1.0.0", "ips": [{"address": "nonsense"}]});
        assert!(CniResult::from_json(&bad).is_err());
        // `ipnetwork` alone would read this as a /32.
        for v in ["1.0.0", "0.4.0", "0.2.0"] {
            let bare = if version::is_legacy_result(v) {
                json!({"cniVersion": v, "ip4": {"ip": "10.68.0.50"}})
            } else {
                json!({"cniVersion": v, "ips": [{"address": "10.68.0.50"}]})
            };
            let e = CniResult::from_json(&bare).unwrap_err();
            assert_eq!(e.code, ErrorCode::DecodingFailure as u32);
            assert!(e.msg.contains("has no prefix length"), "{v}: {}", e.msg);
        }
        let e = serde_json::from_value::<IpConfig>(json!({"address": "10.68.0.50"})).unwrap_err();
        assert!(e.to_string().contains("no prefix length"), "{e}");
        let e = serde_json::from_value::<Route>(json!({"dst": "0.0.0.0"})).unwrap_err();
        assert!(e.to_string().contains("no prefix length"), "{e}");
    }
}
