//! `records.json` and `server.json`.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The names of one attachment, as the plugin recorded them at its ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub container_id: String,
    pub ifname: String,
    /// Lowercase labels: the container's name first (when it has one), then its aliases. The
    /// first one is what PTR answers with.
    pub names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// Every attachment of the network, in ADD order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    pub entries: Vec<Entry>,
}

impl Records {
    /// Replaces the entry of `(container id, ifname)` (a repeated ADD) or appends it.
    pub fn upsert(&mut self, e: Entry) {
        self.remove(&e.container_id, &e.ifname);
        self.entries.push(e);
    }

    /// Removes the entry of `(container id, ifname)`; whether there was one.
    pub fn remove(&mut self, container_id: &str, ifname: &str) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|e| !(e.container_id == container_id && e.ifname == ifname));
        self.entries.len() != before
    }

    pub fn get(&self, container_id: &str, ifname: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.container_id == container_id && e.ifname == ifname)
    }
}

/// What the server needs to start: fixed for its lifetime (a change restarts it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    /// The network's gateway addresses: port 53 UDP and TCP on each.
    pub listen: Vec<IpAddr>,
    /// The port (53; another only for tests of the server alone).
    #[serde(default = "port53")]
    pub port: u16,
    /// The search domain, lowercase, without a trailing dot.
    pub domain: String,
    /// Where the upstream resolvers are read from (re-read on every reload).
    pub resolv_conf: PathBuf,
}

fn port53() -> u16 {
    53
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_replaces_the_same_attachment() {
        let e = |id: &str, n: &str| Entry {
            container_id: id.into(),
            ifname: "eth0".into(),
            names: vec![n.into()],
            ips: vec!["10.0.0.2".parse().unwrap()],
        };
        let mut r = Records::default();
        r.upsert(e("c1", "a"));
        r.upsert(e("c2", "b"));
        r.upsert(e("c1", "a2"));
        assert_eq!(r.entries.len(), 2);
        assert_eq!(r.get("c1", "eth0").unwrap().names, vec!["a2"]);
        assert!(r.remove("c1", "eth0"));
        assert!(!r.remove("c1", "eth0"));
    }
}
