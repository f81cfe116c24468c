//! The files a container's `/etc` gets from its network: `hosts` and `resolv.conf`, derived from
//! the CNI result.

use super::NetMode;
use ipnetwork::IpNetwork;

/// The addresses a result gives the container (those on a sandbox interface, or all if none says).
pub fn container_addresses(result: &cni::CniResult) -> Vec<IpNetwork> {
    let in_sandbox = |i: &Option<usize>| {
        i.and_then(|i| result.interfaces.get(i))
            .is_some_and(|itf| itf.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
    };
    let any_sandbox = result.ips.iter().any(|ip| in_sandbox(&ip.interface));
    result
        .ips
        .iter()
        .filter(|ip| !any_sandbox || in_sandbox(&ip.interface))
        .map(|ip| ip.address)
        .collect()
}

/// `/etc/hosts` for a container.
pub fn hosts_file(mode: &NetMode, hostname: &str, result: Option<&cni::CniResult>) -> String {
    if *mode == NetMode::Host {
        return std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    }
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for a in result.map(container_addresses).unwrap_or_default() {
        if !a.ip().is_loopback() {
            s.push_str(&format!("{}\t{hostname}\n", a.ip()));
        }
    }
    s
}

/// `/etc/resolv.conf`: the result's DNS if it has any, else the host's (without loopback servers,
/// which mean nothing inside another namespace).
pub fn resolv_file(mode: &NetMode, result: Option<&cni::CniResult>) -> String {
    if let Some(dns) = result.map(|r| &r.dns).filter(|d| !d.nameservers.is_empty()) {
        let mut s = String::new();
        for n in &dns.nameservers {
            s.push_str(&format!("nameserver {n}\n"));
        }
        let mut search = dns.search.clone();
        if let Some(d) = &dns.domain
            && search.is_empty()
        {
            search.push(d.clone());
        }
        if !search.is_empty() {
            s.push_str(&format!("search {}\n", search.join(" ")));
        }
        if !dns.options.is_empty() {
            s.push_str(&format!("options {}\n", dns.options.join(" ")));
        }
        return s;
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if *mode == NetMode::Host {
        return host;
    }
    host.lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            !(w.next() == Some("nameserver")
                && w.next()
                    .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|ip| ip.is_loopback()))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn etc_files_from_a_result() {
        let r = cni::CniResult::from_json(&json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "tether0"}, {"name": "eth0", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 1}],
            "dns": {"nameservers": ["10.88.0.1"], "search": ["example.com"]}
        }))
        .unwrap();
        let mode = NetMode::Network("bridge".into());
        assert!(hosts_file(&mode, "box", Some(&r)).contains("10.88.0.5\tbox\n"));
        assert_eq!(
            resolv_file(&mode, Some(&r)),
            "nameserver 10.88.0.1\nsearch example.com\n"
        );
    }
}
