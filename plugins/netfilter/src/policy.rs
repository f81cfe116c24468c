//! What a plugin asks a firewall backend for, as data: the attachment, the port mappings and
//! options of port publishing, the filtering policy. No syntax of any backend appears here
//! except where the reference's own keys carry it (`conditionsV4`/`V6` are iptables matches,
//! `iptablesAdminChainName` an iptables chain): a backend that cannot express such a key
//! refuses it with [`crate::Error::Invalid`].

use std::net::IpAddr;

use crate::Family;

/// One container interface on one network: who owns per-attachment state. Per-attachment
/// objects are found again from these three alone (DEL and GC need neither the container's
/// netns nor a `prevResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachmentId<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl AttachmentId<'_> {
    /// Whether `(container id, ifname)` is this attachment's, whatever the network was called
    /// (a DEL or repeated ADD after a network rename still finds its rules).
    pub fn same_interface(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }

    /// The comment on every per-attachment rule ([`crate::comment`]).
    pub fn comment(&self) -> String {
        crate::comment(self.network, self.container_id, self.ifname)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

/// Which host addresses a mapping listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostIp {
    /// No `hostIP`: every local address of both families.
    Any,
    /// `0.0.0.0` or `::`: every local address of that family.
    AnyOf(Family),
    Addr(IpAddr),
}

impl HostIp {
    pub fn applies_to(self, family: Family) -> bool {
        match self {
            HostIp::Any => true,
            HostIp::AnyOf(f) => f == family,
            HostIp::Addr(a) => Family::from(a) == family,
        }
    }

    pub fn addr(self) -> Option<IpAddr> {
        match self {
            HostIp::Addr(a) => Some(a),
            _ => None,
        }
    }

    /// Would traffic to one also be traffic to the other (same family assumed)?
    pub fn overlaps(self, other: HostIp) -> bool {
        match (self.addr(), other.addr()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

impl std::fmt::Display for HostIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostIp::Any => f.write_str("all host addresses"),
            HostIp::AnyOf(Family::V4) => f.write_str("0.0.0.0"),
            HostIp::AnyOf(Family::V6) => f.write_str("::"),
            HostIp::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mapping {
    pub proto: Proto,
    pub host_port: u16,
    pub container_port: u16,
    pub host_ip: HostIp,
}

/// Where the DNAT rules send traffic that needs masquerading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkChain {
    /// Our own SETMARK chain, setting this bit, and our MASQ chain masquerading it.
    Bit(u32),
    /// A chain the admin manages (e.g. kube-proxy's `KUBE-MARK-MASQ`).
    External(String),
}

/// Port publishing (portmap): the mappings and the reference's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPolicy {
    /// Masquerade hairpin and localhost traffic to published ports.
    pub snat: bool,
    /// Masquerade every source, not only the container subnet and localhost.
    pub masq_all: bool,
    pub mark: MarkChain,
    /// Extra matches on the entry rules (`conditionsV4`/`conditionsV6`, iptables tokens).
    pub conditions_v4: Vec<String>,
    pub conditions_v6: Vec<String>,
    pub mappings: Vec<Mapping>,
}

impl PortPolicy {
    pub fn conditions(&self, family: Family) -> &[String] {
        match family {
            Family::V4 => &self.conditions_v4,
            Family::V6 => &self.conditions_v6,
        }
    }

    /// Mappings that apply to a container address of `family`.
    pub fn mappings_for(&self, family: Family) -> impl Iterator<Item = &Mapping> {
        self.mappings
            .iter()
            .filter(move |m| m.host_ip.applies_to(family))
    }
}

/// A published host port as read back from the kernel, with its holder: what a removal took
/// away (portmap flushes the conntrack entries of UDP/SCTP ones), or what a conflict hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub proto: Proto,
    pub host_port: u16,
    pub host_ip: HostIp,
    /// The container address traffic goes to.
    pub to: Option<IpAddr>,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

/// The firewall plugin's ingress policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressPolicy {
    /// No isolation (the default).
    Open,
    /// Traffic between this bridge and other isolated bridges is dropped (Docker-style).
    SameBridge,
    /// Like `SameBridge`, and traffic between ports of this bridge is dropped too
    /// (Docker's `enable_icc=false`).
    Isolated,
}

impl IngressPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            IngressPolicy::Open => "open",
            IngressPolicy::SameBridge => "same-bridge",
            IngressPolicy::Isolated => "isolated",
        }
    }
}

/// Filtering (the firewall plugin): let the attachment's addresses through, and isolate its
/// bridge as the policy says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterPolicy {
    /// The admin's chain, jumped to first and never written (`iptablesAdminChainName`).
    pub admin_chain: String,
    pub ingress: IngressPolicy,
    /// The bridge the ingress policy applies to; `None` with [`IngressPolicy::Open`].
    pub bridge: Option<String>,
}
