//! The overlay network's definition (what `tether overlay init` stores), the etcd key layout,
//! and the pure arithmetic of host subnets. No I/O here.
//!
//! ```text
//!  /tether/overlay/<network>/config                   NetworkConfig (JSON), no lease
//!  /tether/overlay/<network>/subnets/<ip>-<len>       SubnetRecord (JSON), attached to the holder's lease
//!
//!  overlay 10.200.0.0/16, hostPrefix 24:
//!    10.200.0.0/24  10.200.1.0/24  ...  10.200.255.0/24      one per host, leased by an agent
//!    └ .0  tvx-<vni> address (/32)   └ .1 tob-<vni> gateway (plugin)   └ .2.. containers
//! ```

use crate::error::{Error, Result};
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Every key of every overlay network lives under this prefix.
pub const KEY_PREFIX: &str = "/tether/overlay/";
/// VXLAN adds 50 bytes (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Host subnets smaller than /30 leave no room for the device, the gateway and a container.
pub const MAX_HOST_PREFIX: u8 = 30;
/// At most 2^16 host subnets: the agent lists them all when it picks one.
pub const MAX_SUBNET_BITS: u8 = 16;

/// How packets reach another host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// VXLAN device tvx-<vni>: one neighbour, one FDB entry and one route per peer.
    Vxlan,
    /// No encapsulation: one route per peer via its public IP (hosts must share a link).
    HostGw,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }
}

/// One overlay network, as stored at `/tether/overlay/<network>/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    pub subnet: Ipv4Network,
    pub host_prefix: u8,
    pub vni: u32,
    pub port: u16,
    pub backend: Backend,
}

impl NetworkConfig {
    /// Checks everything `init` is given; the agent checks the stored value again.
    pub fn validate(&self) -> Result<()> {
        let s = self.subnet;
        if s.ip() != s.network() {
            return Err(Error::invalid(format!(
                "--subnet {s}: host bits are set; did you mean {}/{}?",
                s.network(),
                s.prefix()
            )));
        }
        if self.host_prefix <= s.prefix() || self.host_prefix > MAX_HOST_PREFIX {
            return Err(Error::invalid(format!(
                "--host-prefix {}: must be longer than the subnet's /{} and at most /{MAX_HOST_PREFIX}",
                self.host_prefix,
                s.prefix()
            )));
        }
        if self.host_prefix - s.prefix() > MAX_SUBNET_BITS {
            return Err(Error::invalid(format!(
                "--host-prefix {}: {s} would hold 2^{} host subnets, at most 2^{MAX_SUBNET_BITS} are supported",
                self.host_prefix,
                self.host_prefix - s.prefix()
            )));
        }
        if !(1..=tether_overlay_state::MAX_VNI).contains(&self.vni) {
            return Err(Error::invalid(format!(
                "--vni {}: a VXLAN network identifier is 1..={}",
                self.vni,
                tether_overlay_state::MAX_VNI
            )));
        }
        if self.port == 0 {
            return Err(Error::invalid("--port 0: the VXLAN UDP port is 1..=65535"));
        }
        Ok(())
    }

    /// How many host subnets the overlay holds.
    pub fn subnet_count(&self) -> usize {
        1usize << (self.host_prefix - self.subnet.prefix())
    }

    /// The `i`th host subnet.
    pub fn host_subnet(&self, i: usize) -> Ipv4Network {
        let base = u32::from(self.subnet.network());
        let step = 1u32 << (32 - self.host_prefix);
        let ip = Ipv4Addr::from(base + step * i as u32);
        Ipv4Network::new(ip, self.host_prefix).expect("prefix checked by validate")
    }

    /// Whether `net` is one of this overlay's host subnets.
    pub fn is_host_subnet(&self, net: Ipv4Network) -> bool {
        net.prefix() == self.host_prefix
            && net.ip() == net.network()
            && self.subnet.contains(net.ip())
    }

    /// A free host subnet, scanning from a position `seed` picks, so that agents starting at
    /// once try different subnets first (the transaction still decides who gets one).
    pub fn pick_free(&self, taken: &HashSet<Ipv4Network>, seed: u64) -> Option<Ipv4Network> {
        let n = self.subnet_count();
        let start = (seed % n as u64) as usize;
        (0..n)
            .map(|k| self.host_subnet((start + k) % n))
            .find(|s| !taken.contains(s))
    }
}

/// What a host publishes about itself at `/tether/overlay/<network>/subnets/<ip>-<len>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetRecord {
    pub public_ip: Ipv4Addr,
    pub backend: Backend,
    /// The MAC of the host's tvx-<vni> device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
}

/// `/tether/overlay/<network>/`.
pub fn network_prefix(network: &str) -> String {
    format!("{KEY_PREFIX}{network}/")
}

pub fn config_key(network: &str) -> String {
    format!("{}config", network_prefix(network))
}

pub fn subnets_prefix(network: &str) -> String {
    format!("{}subnets/", network_prefix(network))
}

/// `10.200.3.0/24` → `/tether/overlay/<network>/subnets/10.200.3.0-24` (flannel's spelling).
pub fn subnet_key(network: &str, subnet: Ipv4Network) -> String {
    format!(
        "{}{}-{}",
        subnets_prefix(network),
        subnet.ip(),
        subnet.prefix()
    )
}

/// The subnet a key under [`subnets_prefix`] names.
pub fn parse_subnet_key(network: &str, key: &str) -> Option<Ipv4Network> {
    let rest = key.strip_prefix(&subnets_prefix(network))?;
    let (ip, len) = rest.split_once('-')?;
    Ipv4Network::new(ip.parse().ok()?, len.parse().ok()?).ok()
}

/// The VXLAN device's MAC, derived from the host's underlay address: a device recreated by the
/// agent (or after a restart) keeps its MAC, so the peers' neighbour and FDB entries stay right.
pub fn vtep_mac(public_ip: Ipv4Addr) -> [u8; 6] {
    let o = public_ip.octets();
    // 0x02: locally administered, unicast.
    [0x02, 0x74, o[0], o[1], o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(subnet: &str, host_prefix: u8) -> NetworkConfig {
        NetworkConfig {
            subnet: subnet.parse().unwrap(),
            host_prefix,
            vni: 1,
            port: 4789,
            backend: Backend::Vxlan,
        }
    }

    #[test]
    fn host_subnets_tile_the_overlay() {
        let c = cfg("10.200.0.0/16", 24);
        assert_eq!(c.subnet_count(), 256);
        assert_eq!(c.host_subnet(0).to_string(), "10.200.0.0/24");
        assert_eq!(c.host_subnet(255).to_string(), "10.200.255.0/24");
        assert!(c.is_host_subnet("10.200.7.0/24".parse().unwrap()));
        assert!(!c.is_host_subnet("10.201.7.0/24".parse().unwrap()));
        assert!(!c.is_host_subnet("10.200.7.0/25".parse().unwrap()));
    }

    #[test]
    fn pick_free_skips_taken_subnets_and_reports_a_full_overlay() {
        let c = cfg("10.9.0.0/29", 30);
        let mut taken = HashSet::new();
        let a = c.pick_free(&taken, 0).unwrap();
        taken.insert(a);
        let b = c.pick_free(&taken, 0).unwrap();
        assert_ne!(a, b);
        taken.insert(b);
        assert_eq!(c.pick_free(&taken, 5), None);
    }

    #[test]
    fn validation_names_the_bad_flag() {
        let bad = |c: NetworkConfig, flag: &str| {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        };
        bad(cfg("10.200.1.0/16", 24), "--subnet");
        bad(cfg("10.200.0.0/16", 16), "--host-prefix");
        bad(cfg("10.200.0.0/16", 31), "--host-prefix");
        bad(cfg("10.0.0.0/8", 30), "--host-prefix");
        bad(
            NetworkConfig {
                vni: 0,
                ..cfg("10.200.0.0/16", 24)
            },
            "--vni",
        );
        bad(
            NetworkConfig {
                vni: 1 << 24,
                ..cfg("10.200.0.0/16", 24)
            },
            "--vni",
        );
        bad(
            NetworkConfig {
                port: 0,
                ..cfg("10.200.0.0/16", 24)
            },
            "--port",
        );
        cfg("10.200.0.0/16", 24).validate().unwrap();
    }

    #[test]
    fn subnet_keys_round_trip() {
        let s: Ipv4Network = "10.200.3.0/24".parse().unwrap();
        let k = subnet_key("ov1", s);
        assert_eq!(k, "/tether/overlay/ov1/subnets/10.200.3.0-24");
        assert_eq!(parse_subnet_key("ov1", &k), Some(s));
        assert_eq!(parse_subnet_key("ov2", &k), None);
    }
}
