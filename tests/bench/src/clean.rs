//! "Did the run end clean?": what is left on the fake host after every container's DEL.
//!
//! Allowed to stay, as with the reference plugins: `lo`, the bridge, and the shared base chains that
//! portmap creates once per host (with their jump rules and their fixed rules). Everything else is
//! a leftover: another link, any other user chain, any rule naming a container (id, address or
//! host port) or jumping to a chain that is not shared, any lease file.

use std::collections::BTreeSet;
use std::path::Path;

use netns_fixtures::{Netns, PORTMAP_SHARED_CHAINS, is_masq_chain};
use serde_json::{Value, json};

use crate::cni::{BRIDGE, FIRST_HOST_PORT};

#[derive(Debug, Clone, Default)]
pub struct Leftovers {
    pub links: Vec<String>,
    pub chains: Vec<String>,
    pub rules: Vec<String>,
    pub leases: Vec<String>,
    /// Containers whose namespace still holds more than `lo`.
    pub container_links: Vec<String>,
    /// Checks that could not be made (a tool failed): counted as leftovers, never as clean.
    pub unknown: Vec<String>,
}

impl Leftovers {
    pub fn total(&self) -> usize {
        self.links.len()
            + self.chains.len()
            + self.rules.len()
            + self.leases.len()
            + self.container_links.len()
            + self.unknown.len()
    }

    pub fn merge(&mut self, other: Leftovers) {
        self.links.extend(other.links);
        self.chains.extend(other.chains);
        self.rules.extend(other.rules);
        self.leases.extend(other.leases);
        self.container_links.extend(other.container_links);
        self.unknown.extend(other.unknown);
    }

    /// The first few items, for the printed report.
    pub fn describe(&self, max: usize) -> String {
        let all: Vec<String> = [
            ("link", &self.links),
            ("chain", &self.chains),
            ("rule", &self.rules),
            ("lease", &self.leases),
            ("container link", &self.container_links),
            ("unchecked", &self.unknown),
        ]
        .iter()
        .flat_map(|(k, v)| v.iter().map(move |x| format!("{k} {x}")))
        .take(max)
        .collect();
        all.join("; ")
    }

    pub fn to_json(&self) -> Value {
        json!({
            "total": self.total(),
            "links": self.links, "chains": self.chains, "rules": self.rules,
            "leases": self.leases, "container_links": self.container_links,
            "unchecked": self.unknown,
        })
    }
}

/// Interface names in a namespace, read from its `/proc/.../net/dev` on a thread inside it.
pub fn links(ns: &Netns) -> std::io::Result<Vec<String>> {
    let text = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))?;
    Ok(text
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect())
}

/// Everything left on `host` after all DELs. `ips` are the container addresses that were handed
/// out, `n` the number of containers (host ports `FIRST_HOST_PORT..+n`).
pub fn check(host: &Netns, data_dir: &Path, ips: &BTreeSet<String>, n: usize) -> Leftovers {
    let mut left = Leftovers::default();
    match links(host) {
        Ok(names) => {
            left.links = names
                .into_iter()
                .filter(|l| l != "lo" && l != BRIDGE)
                .collect()
        }
        Err(e) => left.unknown.push(format!("host links: {e}")),
    }
    for tool in ["iptables-save", "ip6tables-save"] {
        match host.command(tool).output() {
            Ok(o) if o.status.success() => {
                let (chains, rules) = rules_left(&String::from_utf8_lossy(&o.stdout), ips, n);
                left.chains.extend(chains);
                left.rules.extend(rules);
            }
            Ok(o) => left.unknown.push(format!(
                "{tool}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => left.unknown.push(format!("{tool}: {e}")),
        }
    }
    // Our nftables table (the ours-nftables side): the shared maps and sets stay, empty, and
    // the network's masquerade chain and subnet set (like its iptables chain); any other
    // element, and any attachment's record map or set, is a leftover.
    if let Ok(o) = host
        .command("nft")
        .args(["list", "table", "inet", "tether"])
        .output()
        && o.status.success()
    {
        let mut block = String::new();
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let t = line.trim();
            if t.starts_with("set ") || t.starts_with("map ") || t.starts_with("chain ") {
                block = t.trim_end_matches(" {").to_string();
                if t.starts_with("map pub") || t.starts_with("set fw") {
                    left.chains.push(format!("nftables {block}"));
                }
            } else if t.starts_with("elements =") && !block.starts_with("set masq") {
                left.rules.push(format!("nftables {block}: {t}"));
            }
        }
    }
    leases(data_dir, &mut left.leases);
    left
}

/// Leftover chains and rules in an `iptables-save` dump.
pub fn rules_left(save: &str, ips: &BTreeSet<String>, n: usize) -> (Vec<String>, Vec<String>) {
    // The bridge's per-network masquerade chains are shared base chains too.
    let shared = |c: &str| PORTMAP_SHARED_CHAINS.contains(&c) || is_masq_chain(c);
    let mut table = "";
    let mut user = BTreeSet::new();
    let mut chains = Vec::new();
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t;
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut f = decl.split_whitespace();
            let (name, policy) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            if policy == "-" {
                user.insert(name.to_string());
                if !shared(name) {
                    chains.push(format!("{table}/{name}"));
                }
            }
        }
    }
    let ports: BTreeSet<String> = (0..n).map(|i| (FIRST_HOST_PORT + i).to_string()).collect();
    let mut rules = Vec::new();
    for line in save.lines() {
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        let tokens: Vec<&str> = rule.split_whitespace().collect();
        let chain = tokens.first().copied().unwrap_or("");
        let target = tokens
            .windows(2)
            .find(|w| w[0] == "-j" || w[0] == "-g")
            .map(|w| w[1]);
        let in_unshared = user.contains(chain) && !shared(chain);
        let jumps_unshared = target.is_some_and(|t| user.contains(t) && !shared(t));
        let names_container = rule.contains("bench-")
            || tokens
                .iter()
                .flat_map(|t| t.trim_matches('"').split(','))
                .any(|t| {
                    let addr = t.split(['/', ':']).next().unwrap_or(t);
                    ips.contains(addr) || ports.contains(t)
                });
        if in_unshared || jumps_unshared || names_container {
            rules.push(rule.to_string());
        }
    }
    (chains, rules)
}

/// Lease files: files named after an address (host-local's layout).
fn leases(dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            leases(&p, out);
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str())
            && name.parse::<std::net::IpAddr>().is_ok()
        {
            out.push(p.display().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_per_container_state_and_allows_shared_chains() {
        let save = r#"*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-30575c1fd745aadf7b29659d - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A POSTROUTING -s 10.88.0.2/32 -m comment --comment "x" -j CNI-30575c1fd745aadf7b29659d
-A CNI-30575c1fd745aadf7b29659d ! -d 224.0.0.0/4 -j MASQUERADE
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-DNAT -p tcp -m multiport --dports 20030,20007 -j ACCEPT
-A CNI-HOSTPORT-DNAT -d 10.88.0.9:80 -j ACCEPT
COMMIT
"#;
        let ips: BTreeSet<String> = ["10.88.0.9".to_string()].into();
        let (chains, rules) = rules_left(save, &ips, 10);
        assert_eq!(chains, vec!["nat/CNI-30575c1fd745aadf7b29659d"]);
        assert_eq!(rules.len(), 4, "{rules:#?}");
        assert!(rules[0].starts_with("POSTROUTING -s 10.88.0.2/32"));
    }
}
