//! The fields of a result (or `prevResult`) checked on the JSON, before serde reads it, so that a
//! bad one is refused with a message naming it (`ips[0].address: ...`) instead of being taken
//! for something it is not:
//!
//! - addresses and route destinations need their prefix length: `ipnetwork` alone reads a bare
//!   `10.68.0.50` as `/32` (the reference's `net.ParseCIDR` refuses it), and every plugin after
//!   it would then act on a wrong subnet;
//! - gateways are IP addresses of their address's family; `ips[].interface` points into
//!   `interfaces`; `ips[].version` (0.3.x/0.4.0), when given, matches the address; `ip4`/`ip6`
//!   (0.1.0/0.2.0) hold an address of that family;
//! - list entries are objects (serde would read `[["10.0.0.2/24"]]` as a struct);
//! - an interface has a name, and its `mac`, when given, is hex pairs separated by `:`;
//! - `dns` fields end up as lines of a resolv.conf: nameservers are IP addresses, and no value
//!   holds whitespace or control characters (a newline would add a line of its own).

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};
use std::net::IpAddr;

type Obj = Map<String, Value>;

/// An address or network with an explicit prefix length: `10.1.0.5/16`, `fd00::/64`.
pub fn parse_cidr(s: &str) -> Result<IpNetwork, String> {
    let (addr, prefix) = s.split_once('/').ok_or_else(|| {
        format!("{s:?} has no prefix length: write it like \"10.1.0.5/24\" or \"fd00::5/64\"")
    })?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max && prefix.bytes().all(|b| b.is_ascii_digit()) => {
            IpNetwork::new(ip, p).map_err(|e| format!("{s:?}: {e}"))
        }
        _ => Err(format!(
            "{s:?}: the prefix length must be a number from 0 to {max}"
        )),
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// `obj[key]`, with `null` read as absent (as Go's decoder reads it).
fn get<'a>(obj: &'a Obj, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn string<'a>(at: &str, v: &'a Value) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("{at}: expected a string, not {v}"))
}

fn object<'a>(at: &str, v: &'a Value) -> Result<&'a Obj, String> {
    v.as_object()
        .ok_or_else(|| format!("{at}: expected an object, not {v}"))
}

/// The entries of a list field (absent or `null`: none), each of which must be an object.
fn entries<'a>(obj: &'a Obj, key: &str) -> Result<Vec<(String, &'a Obj)>, String> {
    let Some(v) = get(obj, key) else {
        return Ok(Vec::new());
    };
    let list = v
        .as_array()
        .ok_or_else(|| format!("{key}: expected a list, not {v}"))?;
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            let at = format!("{key}[{i}]");
            object(&at, e).map(|o| (at, o))
        })
        .collect()
}

fn cidr_field(obj: &Obj, at: &str, key: &str) -> Result<IpNetwork, String> {
    let v = get(obj, key).ok_or_else(|| format!("{at}.{key} is missing"))?;
    parse_cidr(string(&format!("{at}.{key}"), v)?).map_err(|e| format!("{at}.{key}: {e}"))
}

/// An optional gateway field, which must be an address of `net`'s family.
fn gateway_field(obj: &Obj, at: &str, key: &str, net: IpNetwork) -> Result<(), String> {
    let Some(v) = get(obj, key) else {
        return Ok(());
    };
    let at = format!("{at}.{key}");
    let s = string(&at, v)?;
    let gw: IpAddr = s
        .parse()
        .map_err(|_| format!("{at}: {s:?} is not an IP address"))?;
    if gw.is_ipv4() != net.is_ipv4() {
        return Err(format!(
            "{at}: {gw} is an {} address, {net} an {} one",
            family(gw),
            family(net.ip())
        ));
    }
    Ok(())
}

fn routes(obj: &Obj, key: &str) -> Result<(), String> {
    for (at, r) in entries(obj, key)? {
        let dst = cidr_field(r, &at, "dst")?;
        gateway_field(r, &at, "gw", dst)?;
    }
    Ok(())
}

/// Hex pairs separated by `:`: 6 bytes for Ethernet, up to 20 for InfiniBand.
fn valid_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    (6..=20).contains(&parts.len())
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Nothing that would break a resolv.conf line.
fn word(at: &str, v: &Value) -> Result<(), String> {
    let s = string(at, v)?;
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{at}: {s:?} must be one word, without spaces or control characters"
        ));
    }
    Ok(())
}

fn words(obj: &Obj, key: &str) -> Result<(), String> {
    let Some(v) = get(obj, key) else {
        return Ok(());
    };
    let list = v
        .as_array()
        .ok_or_else(|| format!("dns.{key}: expected a list, not {v}"))?;
    for (i, w) in list.iter().enumerate() {
        word(&format!("dns.{key}[{i}]"), w)?;
    }
    Ok(())
}

fn dns(obj: &Obj) -> Result<(), String> {
    let Some(v) = get(obj, "dns") else {
        return Ok(());
    };
    let d = object("dns", v)?;
    words(d, "nameservers")?;
    for (i, n) in d
        .get("nameservers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let s = n.as_str().unwrap_or_default();
        // A link-local server may carry its zone: `fe80::1%eth0`.
        let addr = s.split_once('%').map_or(s, |(a, _)| a);
        if addr.parse::<IpAddr>().is_err() {
            return Err(format!("dns.nameservers[{i}]: {s:?} is not an IP address"));
        }
    }
    if let Some(domain) = get(d, "domain") {
        word("dns.domain", domain)?;
    }
    words(d, "search")?;
    words(d, "options")
}

/// A result in the 0.3.0 and later shape.
pub fn check(obj: &Obj) -> Result<(), String> {
    let interfaces = entries(obj, "interfaces")?;
    for (at, i) in &interfaces {
        let name = get(i, "name").ok_or_else(|| format!("{at}.name is missing"))?;
        if string(&format!("{at}.name"), name)?.is_empty() {
            return Err(format!("{at}.name is empty"));
        }
        if let Some(mac) = get(i, "mac") {
            let mac = string(&format!("{at}.mac"), mac)?;
            if !mac.is_empty() && !valid_mac(mac) {
                return Err(format!(
                    "{at}.mac: {mac:?} is not a MAC address (hex pairs like 02:42:ac:11:00:02)"
                ));
            }
        }
    }
    for (at, ip) in entries(obj, "ips")? {
        let address = cidr_field(ip, &at, "address")?;
        gateway_field(ip, &at, "gateway", address)?;
        if let Some(v) = get(ip, "interface") {
            match v.as_u64() {
                Some(n) if usize::try_from(n).is_ok_and(|n| n < interfaces.len()) => {}
                _ => {
                    return Err(format!(
                        "{at}.interface: {v} is not the index of one of the {} interfaces",
                        interfaces.len()
                    ));
                }
            }
        }
        if let Some(v) = get(ip, "version") {
            let want = if address.is_ipv4() { "4" } else { "6" };
            if v.as_str() != Some(want) {
                return Err(format!(
                    "{at}.version: {v} does not match address {address} (version \"{want}\")"
                ));
            }
        }
    }
    routes(obj, "routes")?;
    dns(obj)
}

/// A result in the 0.1.0/0.2.0 shape (`ip4`, `ip6`).
pub fn check_legacy(obj: &Obj) -> Result<(), String> {
    for (key, v4) in [("ip4", true), ("ip6", false)] {
        let Some(v) = get(obj, key) else {
            continue;
        };
        let block = object(key, v)?;
        let ip = cidr_field(block, key, "ip")?;
        if ip.is_ipv4() != v4 {
            return Err(format!(
                "{key}.ip: {ip} is not an {} address",
                if v4 { "IPv4" } else { "IPv6" }
            ));
        }
        gateway_field(block, key, "gateway", ip)?;
        for (at, r) in entries(block, "routes")? {
            let dst = cidr_field(r, &format!("{key}.{at}"), "dst")?;
            gateway_field(r, &format!("{key}.{at}"), "gw", dst)?;
        }
    }
    dns(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        check(v.as_object().unwrap()).unwrap_err()
    }

    #[test]
    fn cidrs_need_their_prefix() {
        assert_eq!(
            parse_cidr("10.1.0.5/16").unwrap().to_string(),
            "10.1.0.5/16"
        );
        assert_eq!(parse_cidr("fd00::/64").unwrap().prefix(), 64);
        for bad in [
            "10.68.0.50",
            "10.0.0.1/33",
            "fd00::/129",
            "10.0.0.1/",
            "10.0.0.1/+8",
            "x/8",
            "10.0.0.1/ 8",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_field_is_checked() {
        let good = json!({
            "interfaces": [{"name": "cni0", "mac": "02:42:ac:11:00:02"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 1, "version": "4"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
            "dns": {"nameservers": ["10.0.0.1", "fe80::1%eth0"], "domain": "a.example", "search": ["b.example"], "options": ["ndots:2"]}
        });
        check(good.as_object().unwrap()).unwrap();
        let with = |path: &[&str], v: Value| {
            let mut r = good.clone();
            let mut at = &mut r;
            for p in &path[..path.len() - 1] {
                at = match p.parse::<usize>() {
                    Ok(i) => &mut at[i],
                    Err(_) => &mut at[*p],
                };
            }
            at[path[path.len() - 1]] = v;
            r
        };
        for (path, v, needle) in [
            (
                &["ips", "0", "address"][..],
                json!("10.68.0.50"),
                "ips[0].address: \"10.68.0.50\" has no prefix length",
            ),
            (&["ips", "0", "address"], json!(5), "expected a string"),
            (
                &["ips", "0", "gateway"],
                json!("10.0.0"),
                "not an IP address",
            ),
            (
                &["ips", "0", "gateway"],
                json!("fd00::1"),
                "is an IPv6 address",
            ),
            (
                &["ips", "0", "interface"],
                json!(2),
                "not the index of one of the 2 interfaces",
            ),
            (&["ips", "0", "interface"], json!(-1), "not the index"),
            (&["ips", "0", "version"], json!("6"), "does not match"),
            (&["routes", "0", "dst"], json!("0.0.0.0"), "routes[0].dst"),
            (&["routes", "0", "gw"], json!("::1"), "routes[0].gw"),
            (
                &["interfaces", "0", "mac"],
                json!("02:42:ac:11:00"),
                "not a MAC",
            ),
            (
                &["interfaces", "0", "mac"],
                json!("zz:42:ac:11:00:02"),
                "not a MAC",
            ),
            (
                &["interfaces", "1", "name"],
                json!(""),
                "interfaces[1].name is empty",
            ),
            (
                &["dns", "nameservers"],
                json!(["10.0.0.1\nnameserver 6.6.6.6"]),
                "dns.nameservers[0]",
            ),
            (
                &["dns", "nameservers"],
                json!(["resolver"]),
                "not an IP address",
            ),
            (&["dns", "domain"], json!("a b"), "dns.domain"),
            (&["dns", "search"], json!(["ok", "x\ny"]), "dns.search[1]"),
            (&["dns", "options"], json!([""]), "dns.options[0]"),
            (&["dns"], json!([]), "dns: expected an object"),
            (
                &["ips"],
                json!([["10.0.0.2/24"]]),
                "ips[0]: expected an object",
            ),
        ] {
            let e = err(with(path, v.clone()));
            assert!(e.contains(needle), "{path:?} = {v}: {e}");
        }
        // Empty MACs are absent ones, as Go's `omitempty` writes them.
        check(
            with(&["interfaces", "0", "mac"], json!(""))
                .as_object()
                .unwrap(),
        )
        .unwrap();
        // An InfiniBand hardware address is 20 bytes.
        let ib = "80:00:00:48:fe:80:00:00:00:00:00:00:02:c9:03:00:00:0f:0f:0f";
        check(
            with(&["interfaces", "0", "mac"], json!(ib))
                .as_object()
                .unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn legacy_blocks() {
        let ok = json!({"ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]}, "ip6": {"ip": "fd00::2/64"}});
        check_legacy(ok.as_object().unwrap()).unwrap();
        for (v, needle) in [
            (json!({"ip4": {"ip": "10.0.0.2"}}), "ip4.ip"),
            (json!({"ip4": {"ip": "fd00::2/64"}}), "not an IPv4 address"),
            (
                json!({"ip6": {"ip": "fd00::2/64", "gateway": "10.0.0.1"}}),
                "ip6.gateway",
            ),
            (
                json!({"ip4": {"ip": "10.0.0.2/24", "routes": [{"dst": "10.1.0.0"}]}}),
                "ip4.routes[0].dst",
            ),
        ] {
            let e = check_legacy(v.as_object().unwrap()).unwrap_err();
            assert!(e.contains(needle), "{v}: {e}");
        }
    }
}
