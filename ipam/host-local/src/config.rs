//! The host-local part of a network config, read exactly as the reference reads it.
//!
//! IPAM plugins get the whole upper config: the keys live under `ipam`, the capabilities under
//! `runtimeConfig`, and `args.cni.ips` next to them.

use crate::Error;
use crate::range::{RangeSet, RangeSpec};
use cni::Route;
use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// Everything ADD, CHECK and STATUS need, validated and with defaults applied.
#[derive(Debug, Clone)]
pub struct Config {
    /// The network name: the directory of this network's leases under `data_dir`.
    pub network: String,
    pub data_dir: PathBuf,
    /// One address per set; index `i` is the `N` of `last_reserved_ip.N`.
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub resolv_conf: Option<PathBuf>,
    /// Requested addresses, deduplicated, in the order `CNI_ARGS IP`, `args.cni.ips`,
    /// `runtimeConfig.ips`.
    pub requested: Vec<IpAddr>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    /// The legacy single range lives directly in `ipam`.
    #[serde(flatten)]
    legacy: RawRange,
    #[serde(default)]
    ranges: Option<Vec<Vec<RawRange>>>,
    #[serde(default)]
    routes: Option<Vec<RawRoute>>,
    #[serde(default)]
    resolv_conf: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRuntimeConfig {
    #[serde(default)]
    ip_ranges: Option<Vec<Vec<RawRange>>>,
    #[serde(default)]
    ips: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct RawArgsCni {
    #[serde(default)]
    ips: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct RawArgs {
    #[serde(default)]
    cni: Option<RawArgsCni>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNet {
    #[serde(default)]
    ipam: Option<RawIpam>,
    #[serde(default)]
    runtime_config: Option<RawRuntimeConfig>,
    #[serde(default)]
    args: Option<RawArgs>,
}

fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, Error> {
    serde_json::from_value(v.clone()).map_err(|e| Error::Config(format!("invalid config: {e}")))
}

/// `null` and `""` mean "not set", as Go's `net.IP` decoding treats them.
fn set(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn parse_ip(what: &str, s: &str) -> Result<IpAddr, Error> {
    s.trim()
        .parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| Error::Config(format!("{what}: {s:?} is not an IP address")))
}

fn parse_cidr(what: &str, s: &str) -> Result<IpNetwork, Error> {
    let bad = || {
        Error::Config(format!(
            "{what}: {s:?} is not a CIDR (like \"10.1.0.0/16\")"
        ))
    };
    let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    IpNetwork::new(addr.to_canonical(), prefix).map_err(|_| bad())
}

/// A requested address: `10.1.2.3` or `10.1.2.3/24` (the prefix is ignored, as the reference's
/// `ips` capability does).
pub fn parse_requested(what: &str, s: &str) -> Result<IpAddr, Error> {
    let addr = s.trim().split_once('/').map_or(s.trim(), |(a, _)| a);
    parse_ip(what, addr)
}

impl RawRange {
    fn spec(&self, what: &str) -> Result<RangeSpec, Error> {
        let subnet = set(&self.subnet)
            .ok_or_else(|| Error::Config(format!("{what}: \"subnet\" is required")))?;
        let at = |key: &str| format!("{what}: {key}");
        Ok(RangeSpec {
            subnet: parse_cidr(&at("subnet"), subnet)?,
            start: set(&self.range_start)
                .map(|s| parse_ip(&at("rangeStart"), s))
                .transpose()?,
            end: set(&self.range_end)
                .map(|s| parse_ip(&at("rangeEnd"), s))
                .transpose()?,
            gateway: set(&self.gateway)
                .map(|s| parse_ip(&at("gateway"), s))
                .transpose()?,
        })
    }
}

/// The lease directory of a network: `<dataDir>/<name>`. Only this (and the name) is needed to
/// release leases, so DEL and GC read nothing else: a config whose ranges became invalid must not
/// keep a container from being torn down.
pub fn data_dir(raw: &Value) -> Result<PathBuf, Error> {
    match raw.get("ipam").and_then(|i| i.get("dataDir")) {
        None | Some(Value::Null) => Ok(PathBuf::from(DEFAULT_DATA_DIR)),
        Some(Value::String(s)) if s.is_empty() => Ok(PathBuf::from(DEFAULT_DATA_DIR)),
        Some(Value::String(s)) => Ok(PathBuf::from(s)),
        Some(other) => Err(Error::Config(format!(
            "ipam.dataDir must be a string, not {other}"
        ))),
    }
}

impl Config {
    /// Reads the config like the reference's `LoadIPAMConfig`: the legacy range is prepended as
    /// the first set, the `ipRanges` capability is prepended before that; every set is
    /// validated; sets must not overlap; `cni_version` below 0.3.0 allows one address per family.
    /// `cni_args_ip` is the `CNI_ARGS` `IP` value (a comma-separated list is accepted).
    pub fn parse(
        raw: &Value,
        network: &str,
        cni_version: &str,
        cni_args_ip: Option<&str>,
    ) -> Result<Config, Error> {
        let net: RawNet = decode(raw)?;
        let ipam = net.ipam.ok_or_else(|| {
            Error::Config("IPAM config missing: the config must have an \"ipam\" object".into())
        })?;
        let runtime = net.runtime_config.unwrap_or_default();

        let mut requested: Vec<IpAddr> = Vec::new();
        let mut want = |ip: IpAddr| {
            if !requested.contains(&ip) {
                requested.push(ip);
            }
        };
        for s in cni_args_ip
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter(|s| !s.trim().is_empty())
        {
            want(parse_requested("CNI_ARGS IP", s).map_err(|e| Error::Args(e.to_string()))?);
        }
        let args_ips = net.args.and_then(|a| a.cni).and_then(|c| c.ips);
        for s in args_ips.iter().flatten() {
            want(parse_requested("args.cni.ips", s)?);
        }
        for s in runtime.ips.iter().flatten() {
            want(parse_requested("runtimeConfig.ips", s)?);
        }

        let mut raw_sets: Vec<(String, &[RawRange])> = Vec::new();
        let legacy = [ipam.legacy];
        for (i, set) in runtime.ip_ranges.iter().flatten().enumerate() {
            raw_sets.push((format!("runtimeConfig.ipRanges[{i}]"), set));
        }
        if set(&legacy[0].subnet).is_some() {
            raw_sets.push(("ipam.subnet".into(), &legacy));
        }
        for (i, set) in ipam.ranges.iter().flatten().enumerate() {
            raw_sets.push((format!("ipam.ranges[{i}]"), set));
        }
        if raw_sets.is_empty() {
            return Err(Error::Config(
                "no IP ranges specified: set ipam.ranges (or the legacy ipam.subnet)".into(),
            ));
        }
        let mut range_sets = Vec::with_capacity(raw_sets.len());
        for (i, (what, raw_set)) in raw_sets.iter().enumerate() {
            let specs = raw_set
                .iter()
                .enumerate()
                .map(|(j, r)| r.spec(&format!("{what}[{j}]")))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.context(format!("invalid range set {i}")))?;
            range_sets.push(
                RangeSet::new(&specs)
                    .map_err(|e| e.context(format!("invalid range set {i} ({what})")))?,
            );
        }
        let v4 = range_sets.iter().filter(|s| s.is_ipv4()).count();
        if (v4 > 1 || range_sets.len() - v4 > 1) && !cni::version::at_least(cni_version, "0.3.0") {
            return Err(Error::Config(format!(
                "CNI version {cni_version} does not support more than 1 address per family: use cniVersion 0.3.0 or newer"
            )));
        }
        for (i, a) in range_sets.iter().enumerate() {
            if let Some(j) = (i + 1..range_sets.len()).find(|&j| a.overlaps(&range_sets[j])) {
                return Err(Error::Config(format!(
                    "range set {i} overlaps with range set {j}"
                )));
            }
        }

        let routes = ipam
            .routes
            .iter()
            .flatten()
            .map(|r| {
                Ok(Route::new(
                    parse_cidr("ipam.routes dst", &r.dst)?,
                    set(&r.gw)
                        .map(|g| parse_ip("ipam.routes gw", g))
                        .transpose()?,
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;

        Ok(Config {
            network: network.to_string(),
            data_dir: data_dir(raw)?,
            range_sets,
            routes,
            resolv_conf: set(&ipam.resolv_conf).map(PathBuf::from),
            requested,
        })
    }

    pub fn dir(&self) -> PathBuf {
        self.data_dir.join(Path::new(&self.network))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Config, Error> {
        Config::parse(&v, "net", "1.1.0", None)
    }

    #[test]
    fn legacy_keys_and_ranges_combine_in_reference_order() {
        let c = parse(json!({
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.3.0.0/24"}]]},
            "ipam": {
                "type": "host-local",
                "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "gateway": "10.1.0.254",
                "ranges": [[{"subnet": "fd00::/64"}], [{"subnet": "10.2.0.0/16", "rangeEnd": ""}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.254"}],
                "dataDir": "/tmp/x",
                "resolvConf": "/etc/resolv.conf"
            }
        }))
        .unwrap();
        let firsts: Vec<String> = c
            .range_sets
            .iter()
            .map(|s| s.0[0].subnet.to_string())
            .collect();
        assert_eq!(
            firsts,
            ["10.3.0.0/24", "10.1.0.0/24", "fd00::/64", "10.2.0.0/16"]
        );
        assert_eq!(c.range_sets[1].0[0].start.to_string(), "10.1.0.10");
        assert_eq!(c.range_sets[1].0[0].gateway.to_string(), "10.1.0.254");
        assert_eq!(c.range_sets[3].0[0].end.to_string(), "10.2.255.254");
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].gw, Some("10.1.0.254".parse().unwrap()));
        assert_eq!(c.dir(), PathBuf::from("/tmp/x/net"));
        assert_eq!(c.resolv_conf, Some(PathBuf::from("/etc/resolv.conf")));
    }

    #[test]
    fn requested_ips_from_all_sources() {
        let c = Config::parse(
            &json!({
                "args": {"cni": {"ips": ["10.1.0.7", "10.1.0.5"]}},
                "runtimeConfig": {"ips": ["10.1.0.8/24"]},
                "ipam": {"subnet": "10.1.0.0/24"}
            }),
            "net",
            "1.0.0",
            Some("10.1.0.5,fd00::5/64"),
        )
        .unwrap();
        let got: Vec<String> = c.requested.iter().map(|i| i.to_string()).collect();
        assert_eq!(got, ["10.1.0.5", "fd00::5", "10.1.0.7", "10.1.0.8"]);
        let e = Config::parse(
            &json!({"ipam": {"subnet": "10.1.0.0/24"}}),
            "net",
            "1.0.0",
            Some("nope"),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Args(_)), "{e}");
        let e = parse(json!({"args": {"cni": {"ips": ["x"]}}, "ipam": {"subnet": "10.1.0.0/24"}}))
            .unwrap_err();
        assert!(e.to_string().contains("args.cni.ips"), "{e}");
    }

    #[test]
    fn config_errors_are_clear() {
        let msg = |v: Value| parse(v).unwrap_err().to_string();
        assert!(msg(json!({})).contains("\"ipam\""));
        assert!(msg(json!({"ipam": {"type": "host-local"}})).contains("no IP ranges"));
        assert!(msg(json!({"ipam": {"subnet": "10.1.0.5/24"}})).contains("host bits set"));
        assert!(msg(json!({"ipam": {"subnet": "10.1.0.5/32"}})).contains("too small"));
        assert!(msg(json!({"ipam": {"subnet": "10.1.0.0"}})).contains("not a CIDR"));
        assert!(
            msg(json!({"ipam": {"ranges": [[{"rangeStart": "10.0.0.1"}]]}}))
                .contains("\"subnet\" is required")
        );
        assert!(msg(json!({"ipam": {"ranges": [[]]}})).contains("empty range set"));
        assert!(
            msg(
                json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}})
            )
            .contains("mixed address families")
        );
        assert!(
            msg(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/16"}]]}}))
                .contains("range set 0 overlaps with range set 1")
        );
        assert!(msg(json!({"ipam": {"ranges": "x"}})).contains("invalid config"));
        let two_v4 =
            json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]}});
        let e = Config::parse(&two_v4, "n", "0.2.0", None).unwrap_err();
        assert!(e.to_string().contains("more than 1 address per family"));
        Config::parse(&two_v4, "n", "0.3.0", None).unwrap();
    }

    #[test]
    fn data_dir_is_lenient() {
        assert_eq!(
            data_dir(&json!({})).unwrap(),
            PathBuf::from(DEFAULT_DATA_DIR)
        );
        assert_eq!(
            data_dir(&json!({"ipam": {"dataDir": "", "subnet": "bad"}})).unwrap(),
            PathBuf::from(DEFAULT_DATA_DIR)
        );
        assert!(data_dir(&json!({"ipam": {"dataDir": 3}})).is_err());
    }
}
