//! The tuning config: static keys, `args.cni` overrides, the `mac` capability and `CNI_ARGS MAC=`,
//! merged into one [`Tuning`]; and the sysctl keys turned into checked `/proc/sys/net` paths.

use crate::Error;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use std::fmt;
use std::path::{Path, PathBuf};

/// The MTU bounds any link can have: IPv4's minimum (the kernel's `ETH_MIN_MTU`), and the
/// loopback's 64 KiB. Each device's own bounds, narrower, are the kernel's to enforce (a refusal
/// then rolls back what ADD changed).
pub const MIN_MTU: u32 = 68;
pub const MAX_MTU: u32 = 65536;

/// Where backups of the original link values live, as in the reference.
pub const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";

/// The node's optional sysctl allow-list (one regex per line), as in the reference.
pub const ALLOWLIST_FILE: &str = "/etc/cni/tuning/allowlist.conf";

/// What one invocation asks for, after every source was merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuning {
    pub data_dir: PathBuf,
    /// Config keys (as written) and values, in config order.
    pub sysctl: Vec<(String, String)>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub promisc: Option<bool>,
    pub allmulti: Option<bool>,
    pub tx_qlen: Option<u32>,
}

impl Tuning {
    /// Does the config change any attribute of the link (and so need a backup of it)?
    pub fn touches_link(&self) -> bool {
        self.mac.is_some()
            || self.mtu.is_some()
            || self.promisc.is_some()
            || self.allmulti.is_some()
            || self.tx_qlen.is_some()
    }
}

/// The keys that may appear at the top level and again under `args.cni`.
#[derive(Debug, Default, Deserialize)]
struct Keys {
    #[serde(default)]
    sysctl: Option<Sysctls>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    promisc: Option<bool>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(default, rename = "txQLen")]
    tx_qlen: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(flatten)]
    keys: Keys,
    #[serde(default)]
    runtime_config: Option<RawRuntime>,
    #[serde(default)]
    args: Option<RawArgs>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRuntime {
    #[serde(default)]
    mac: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawArgs {
    #[serde(default)]
    cni: Option<Keys>,
}

/// A JSON object of sysctl key to string value that keeps config order and refuses a key given
/// twice (the reference rejects duplicates too: which value would win is otherwise arbitrary).
#[derive(Debug, Default)]
struct Sysctls(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Sysctls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sysctls;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of sysctl names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Sysctls, A::Error> {
                let mut out: Vec<(String, String)> = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicated sysctl key {k:?}"
                        )));
                    }
                    out.push((k, v));
                }
                Ok(Sysctls(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses the config from the raw stdin (not the already-parsed JSON value, which would have
/// silently merged duplicated sysctl keys). `cni_args_mac` is `CNI_ARGS MAC=`.
///
/// Precedence follows the reference's code: static keys < `CNI_ARGS MAC` < `runtimeConfig.mac` <
/// `args.cni`; `args.cni.sysctl` entries are merged over the static map.
pub fn parse(stdin: &[u8], cni_args_mac: Option<&str>) -> Result<Tuning, Error> {
    let raw: RawConf = serde_json::from_slice(stdin)
        .map_err(|e| Error::Config(format!("invalid tuning configuration: {e}")))?;
    let mut keys = raw.keys;
    let mut sysctl = keys.sysctl.take().unwrap_or_default().0;
    let mut mac = keys.mac.filter(|m| !m.is_empty());
    if let Some(m) = cni_args_mac.filter(|m| !m.is_empty()) {
        mac = Some(m.to_string());
    }
    if let Some(m) = raw
        .runtime_config
        .and_then(|r| r.mac)
        .filter(|m| !m.is_empty())
    {
        mac = Some(m);
    }
    if let Some(a) = raw.args.and_then(|a| a.cni) {
        for (k, v) in a.sysctl.unwrap_or_default().0 {
            match sysctl.iter_mut().find(|(seen, _)| *seen == k) {
                Some(slot) => slot.1 = v,
                None => sysctl.push((k, v)),
            }
        }
        if let Some(m) = a.mac.filter(|m| !m.is_empty()) {
            mac = Some(m);
        }
        keys.mtu = a.mtu.or(keys.mtu);
        keys.promisc = a.promisc.or(keys.promisc);
        keys.allmulti = a.allmulti.or(keys.allmulti);
        keys.tx_qlen = a.tx_qlen.or(keys.tx_qlen);
    }
    let mac = mac
        .map(|m| parse_mac(&m).ok_or_else(|| Error::Config(format!("invalid MAC address {m:?}"))))
        .transpose()?;
    if let Some(m) = mac
        && m[0] & 1 == 1
    {
        return Err(Error::Config(format!(
            "MAC address {} is a multicast address; an interface needs a unicast one",
            tether_netlink::format_mac(m)
        )));
    }
    if mac == Some([0; 6]) {
        return Err(Error::Config(
            "MAC address 00:00:00:00:00:00 is no interface's address".into(),
        ));
    }
    // The reference treats 0 as "not set".
    let mtu = keys.mtu.filter(|m| *m != 0);
    if let Some(m) = mtu
        && !(MIN_MTU..=MAX_MTU).contains(&m)
    {
        return Err(Error::Config(format!(
            "invalid MTU {m}: it must be between {MIN_MTU} and {MAX_MTU}"
        )));
    }
    for (k, v) in &sysctl {
        check_sysctl_value(k, v)?;
    }
    Ok(Tuning {
        data_dir: PathBuf::from(
            raw.data_dir
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
        ),
        sysctl,
        mac,
        mtu,
        promisc: keys.promisc,
        allmulti: keys.allmulti,
        tx_qlen: keys.tx_qlen,
    })
}

/// Only `dataDir`, for DEL: it must find the backup even when the rest of the config no longer
/// parses (configs do change between ADD and DEL).
pub fn data_dir(raw: &serde_json::Value) -> PathBuf {
    PathBuf::from(
        raw.get("dataDir")
            .and_then(serde_json::Value::as_str)
            .filter(|d| !d.is_empty())
            .unwrap_or(DEFAULT_DATA_DIR),
    )
}

/// A sysctl value is written to its file as it is: a newline would make the kernel take only
/// the first line (or write a second value), a NUL would cut it, other control characters mean
/// nothing to any sysctl. Spaces and tabs separate the words of vector values
/// (`net.ipv4.tcp_rmem`).
fn check_sysctl_value(key: &str, value: &str) -> Result<(), Error> {
    if let Some(c) = value.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(Error::Config(format!(
            "invalid value {value:?} for sysctl {key:?}: it contains the control character {c:?} (one line of words separated by spaces)"
        )));
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`), case-insensitive.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    tether_netlink::parse_mac(&s.replace('-', ":"))
}

/// Turns a sysctl key into its file under `/proc/sys/net`, refusing anything that could name a
/// file elsewhere.
///
/// Keys are dotted (`net.ipv4.conf.IFNAME.arp_filter`) or, like sysctl(8) allows, slashed
/// (`net/ipv4/conf/eth0.100/arp_filter`, needed when an interface name has a dot). A component
/// that is exactly `IFNAME` becomes `ifname`; splitting happens first, so a dotted interface name
/// stays one component.
pub fn sysctl_path(key: &str, ifname: &str) -> Result<PathBuf, Error> {
    let invalid = |why: &str| Error::Config(format!("invalid sysctl key {key:?}: {why}"));
    let sep = if key.contains('/') { '/' } else { '.' };
    let parts: Vec<&str> = key
        .split(sep)
        .map(|p| if p == "IFNAME" { ifname } else { p })
        .collect();
    if parts.first() != Some(&"net") || parts.len() < 2 {
        return Err(invalid(
            "only network sysctls (net.*, under /proc/sys/net) may be set",
        ));
    }
    for p in &parts {
        if p.is_empty() || *p == "." || *p == ".." {
            return Err(invalid("empty, \".\" or \"..\" path component"));
        }
        if p.contains('/') || p.contains('\0') {
            return Err(invalid("a path component contains '/' or NUL"));
        }
        // No sysctl name has them; in a path they only hide what the key names.
        if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "a path component contains whitespace or a control character",
            ));
        }
    }
    let mut path = PathBuf::from("/proc/sys");
    path.extend(parts);
    Ok(path)
}

/// Checks every key against the node's allow-list, when the file exists (no file = no limit, as
/// in the reference). Patterns are unanchored regexes matched against the key as written.
pub fn check_allowlist(file: &Path, keys: &[(String, String)]) -> Result<(), Error> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Io {
                what: format!("failed to read {}", file.display()),
                source: e,
            });
        }
    };
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let regexes = patterns
        .iter()
        .map(|p| {
            regex::Regex::new(p).map_err(|e| {
                Error::Config(format!("invalid pattern {p:?} in {}: {e}", file.display()))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (k, _) in keys {
        if !regexes.iter().any(|r| r.is_match(k)) {
            return Err(Error::Config(format!(
                "sysctl {k} is not allowed by {}; allowed patterns: {patterns:?}",
                file.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys() {
        let p = |k: &str| sysctl_path(k, "eth0.100").map(|p| p.display().to_string());
        assert_eq!(
            p("net.core.somaxconn").unwrap(),
            "/proc/sys/net/core/somaxconn"
        );
        assert_eq!(
            p("net.ipv4.conf.IFNAME.arp_filter").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.100/arp_filter"
        );
        assert_eq!(
            p("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.100/forwarding"
        );
        for bad in [
            "kernel.hostname",
            "net",
            "net..core",
            "net.core.",
            "net/../kernel/hostname",
            "net.ipv4/../../kernel/x",
            "/proc/sys/net/core/somaxconn",
            "net/core//x",
            "vm.swappiness",
            "net/./core",
            "",
            "net.core.somaxconn\n",
            "net.core. somaxconn",
            "net.core.some\u{1b}x",
            "net.ipv4.conf.IFNAME\0.x",
            "net/ipv4/conf/../../../kernel/hostname",
            "net//ipv4",
            "./net/core/x",
            "net.",
            ".net.core.x",
        ] {
            assert!(p(bad).is_err(), "{bad} accepted");
        }
        assert!(sysctl_path("net.ipv4.conf.IFNAME.x", "..").is_err());
    }

    #[test]
    fn precedence_and_duplicates() {
        let conf = br#"{"cniVersion":"1.0.0","name":"n","type":"tuning",
            "mac":"02:00:00:00:00:01","mtu":1400,"sysctl":{"net.a":"1","net.b":"2"},
            "runtimeConfig":{"mac":"02:00:00:00:00:02"},
            "args":{"cni":{"mtu":1300,"sysctl":{"net.b":"3","net.c":"4"},"txQLen":50}}}"#;
        let t = parse(conf, Some("02:00:00:00:00:03")).unwrap();
        assert_eq!(t.mac, Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(t.mtu, Some(1300));
        assert_eq!(t.tx_qlen, Some(50));
        assert_eq!(
            t.sysctl,
            vec![
                ("net.a".into(), "1".into()),
                ("net.b".into(), "3".into()),
                ("net.c".into(), "4".into())
            ]
        );
        assert_eq!(t.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let t = parse(br#"{"mac":"02:00:00:00:00:01"}"#, Some("02:00:00:00:00:03")).unwrap();
        assert_eq!(t.mac, Some([2, 0, 0, 0, 0, 3]));
        let e = parse(br#"{"sysctl":{"net.a":"1","net.a":"2"}}"#, None).unwrap_err();
        assert!(e.to_string().contains("duplicated"), "{e}");
        assert!(parse(br#"{"mac":"zz:00:00:00:00:01"}"#, None).is_err());
        assert!(parse(br#"{"mac":"01:00:00:00:00:01"}"#, None).is_err());
        assert!(parse(br#"{"txQLen":-1}"#, None).is_err());
        let t = parse(br#"{"mtu":0,"mac":""}"#, None).unwrap();
        assert!(!t.touches_link());
    }

    #[test]
    fn values_and_link_fields_are_checked() {
        let err = |conf: &str| parse(conf.as_bytes(), None).unwrap_err().to_string();
        for v in [r#""1\n2""#, r#""1\u0000""#, r#""1\r""#, r#""\u001b[2J""#] {
            let e = err(&format!(r#"{{"sysctl":{{"net.core.somaxconn":{v}}}}}"#));
            assert!(e.contains("control character"), "{v}: {e}");
        }
        // Also when the value comes from args.cni.
        let e = err(r#"{"args":{"cni":{"sysctl":{"net.core.somaxconn":"1\n2"}}}}"#);
        assert!(e.contains("control character"), "{e}");
        let t = parse(
            br#"{"sysctl":{"net.ipv4.tcp_rmem":"4096\t87380 6291456"}}"#,
            None,
        )
        .unwrap();
        assert_eq!(t.sysctl[0].1, "4096\t87380 6291456");
        for mtu in [1, 67, 65537, 70000] {
            let e = err(&format!(r#"{{"mtu":{mtu}}}"#));
            assert!(e.contains("invalid MTU"), "{mtu}: {e}");
        }
        for mtu in [68, 1500, 9000, 65536] {
            assert_eq!(
                parse(format!(r#"{{"mtu":{mtu}}}"#).as_bytes(), None)
                    .unwrap()
                    .mtu,
                Some(mtu)
            );
        }
        assert!(err(r#"{"mac":"00:00:00:00:00:00"}"#).contains("no interface's address"));
        assert!(err(r#"{"runtimeConfig":{"mac":"00-00-00-00-00-00"}}"#).contains("no interface"));
        for bad in [
            r#"{"promisc":"yes"}"#,
            r#"{"allmulti":1}"#,
            r#"{"txQLen":4294967296}"#,
            r#"{"mtu":-1}"#,
        ] {
            assert!(err(bad).contains("invalid tuning configuration"), "{bad}");
        }
    }

    #[test]
    fn allowlist() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("allowlist.conf");
        let keys = vec![("net.core.somaxconn".to_string(), "1".to_string())];
        check_allowlist(&f, &keys).unwrap();
        std::fs::write(
            &f,
            "^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n\n^net\\.ipv4\\.ping_group_range$\n",
        )
        .unwrap();
        assert!(check_allowlist(&f, &keys).is_err());
        check_allowlist(
            &f,
            &[("net.ipv4.conf.IFNAME.arp_filter".into(), "1".into())],
        )
        .unwrap();
        std::fs::write(&f, "net\\.core\\.\n").unwrap();
        check_allowlist(&f, &keys).unwrap();
    }
}
