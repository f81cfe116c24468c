//! The records of one generation, indexed for lookups: name → addresses, address → name.

use std::collections::HashMap;
use std::net::IpAddr;

use tether_dns_state::Records;

/// Names are lowercase labels (the plugin lowercases them); lookups lowercase the query.
#[derive(Debug, Default)]
pub struct Table {
    /// The domain, lowercase, without a trailing dot.
    pub domain: String,
    names: HashMap<String, Vec<IpAddr>>,
    ptr: HashMap<IpAddr, String>,
    entries: usize,
}

impl Table {
    pub fn new(domain: &str, records: &Records) -> Table {
        let mut t = Table {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            entries: records.entries.len(),
            ..Default::default()
        };
        for e in &records.entries {
            for n in &e.names {
                let ips = t.names.entry(n.to_ascii_lowercase()).or_default();
                for ip in &e.ips {
                    if !ips.contains(ip) {
                        ips.push(*ip);
                    }
                }
            }
            // PTR: the entry's first name (the container's own name), qualified.
            if let Some(first) = e.names.first() {
                for ip in &e.ips {
                    t.ptr
                        .entry(*ip)
                        .or_insert_with(|| format!("{first}.{}", t.domain));
                }
            }
        }
        t
    }

    /// The addresses of a label (lowercase), if it is a name here.
    pub fn lookup(&self, label: &str) -> Option<&[IpAddr]> {
        self.names.get(label).map(Vec::as_slice)
    }

    /// The qualified name of an address, if it is a container's.
    pub fn reverse(&self, ip: &IpAddr) -> Option<&str> {
        self.ptr.get(ip).map(String::as_str)
    }

    pub fn entries(&self) -> usize {
        self.entries
    }
}
