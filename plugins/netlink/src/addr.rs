//! Interface addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use rtnetlink::AddressMessageBuilder;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};

use crate::error::{Error, Result};
use crate::handle::NsHandle;

/// One address on one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    /// The local address with its prefix length (host bits kept: `10.0.0.5/24`).
    pub net: IpNetwork,
    /// `RT_SCOPE_*`: 0 universe, 253 link, 254 host.
    pub scope: u8,
    /// `IFA_F_*` flags (from `IFA_FLAGS` when present, which carries all 32 bits).
    pub flags: u32,
}

/// `IFA_F_NODAD`
pub const IFA_F_NODAD: u32 = 0x02;
/// `IFA_F_TENTATIVE`
pub const IFA_F_TENTATIVE: u32 = 0x40;
/// `IFA_F_PERMANENT`
pub const IFA_F_PERMANENT: u32 = 0x80;
/// `IFA_F_SECONDARY`, also known as `IFA_F_TEMPORARY` for IPv6 privacy addresses.
pub const IFA_F_TEMPORARY: u32 = 0x01;

fn message(idx: u32, net: IpNetwork) -> AddressMessage {
    match net.ip() {
        // The v4 builder also sets IFA_BROADCAST (for prefixes below /31), as `ip addr add ...
        // brd +` and netavark do.
        IpAddr::V4(ip) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(idx)
            .address(ip, net.prefix())
            .build(),
        IpAddr::V6(ip) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(idx)
            .address(ip, net.prefix())
            .build(),
    }
}

fn parse(m: AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    let mut flags = u32::from(m.header.flags.bits());
    for attr in m.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(ip),
            AddressAttribute::Address(ip) => address = Some(ip),
            AddressAttribute::Flags(f) => flags = f.bits(),
            _ => {}
        }
    }
    // For point-to-point v4 links IFA_ADDRESS is the peer; IFA_LOCAL is ours when present.
    let ip = local.or(address)?;
    Some(Addr {
        index: m.header.index,
        net: IpNetwork::new(ip, m.header.prefix_len).ok()?,
        scope: m.header.scope.into(),
        flags,
    })
}

impl NsHandle {
    /// Adds `net` to link `idx`. `nodad` skips IPv6 duplicate address detection, so the address
    /// is usable at once (ignored for IPv4). An address already present is `Error::Exists`.
    pub fn add_addr(&self, idx: u32, net: IpNetwork, nodad: bool) -> Result<()> {
        let mut msg = message(idx, net);
        if nodad && net.is_ipv6() {
            msg.header.flags |= AddressHeaderFlags::Nodad;
        }
        self.ack(
            "add address",
            format!("{net} to link #{idx}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Addresses of link `idx`, or of every link.
    ///
    /// For one link the kernel is asked to filter (strict checking on for that dump): on a host
    /// with a thousand veths the unfiltered dump is a thousand link-local addresses to read and
    /// throw away.
    pub fn addrs(&self, idx: Option<u32>) -> Result<Vec<Addr>> {
        let mut req = AddressMessage::default();
        let filtered = match idx {
            Some(i) => match self.conn().set_strict(true) {
                Ok(()) => {
                    req.header.index = i;
                    true
                }
                // Before Linux 4.20: dump everything and filter below.
                Err(e) => {
                    tracing::debug!(error = %e, "no strict netlink checking; unfiltered address dump");
                    false
                }
            },
            None => false,
        };
        let msgs = self.dump("list", "addresses", RouteNetlinkMessage::GetAddress(req));
        if filtered && let Err(e) = self.conn().set_strict(false) {
            tracing::warn!(error = %e, "could not turn strict netlink checking off again");
        }
        let msgs = match msgs {
            // A filtered dump of a link that is gone fails (ENODEV); unfiltered, it lists nothing.
            Err(Error::NotFound(_)) if filtered => Vec::new(),
            other => other?,
        };
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => parse(a),
                _ => None,
            })
            .filter(|a| idx.is_none_or(|i| a.index == i))
            .collect())
    }

    /// Removes `net` from link `idx`; a missing address is `Error::NotFound`.
    pub fn del_addr(&self, idx: u32, net: IpNetwork) -> Result<()> {
        self.ack(
            "delete address",
            format!("{net} from link #{idx}"),
            RouteNetlinkMessage::DelAddress(message(idx, net)),
            0,
        )
    }
}
