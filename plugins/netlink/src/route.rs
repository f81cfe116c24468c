//! Routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::handle::NsHandle;

/// `RT_TABLE_LOCAL`: the kernel's own local/broadcast routes.
const RT_TABLE_LOCAL: u32 = 255;

/// `RTPROT_BOOT`: the protocol of routes that the Go netlink library (and so the reference CNI
/// plugins) adds.
pub const RTPROT_BOOT: u8 = 3;
/// `RTPROT_STATIC`: what `ip route add` (and [`RouteSpec`] by default) adds.
pub const RTPROT_STATIC: u8 = 4;

/// A route to add or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination; host bits are ignored (`10.0.0.5/24` means `10.0.0.0/24`).
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub metric: Option<u32>,
    /// Defaults to the main table.
    pub table: Option<u32>,
    /// `RT_SCOPE_*`. When adding, `None` means link scope for a route without a gateway and
    /// universe otherwise (what `ip route add` picks); when deleting, `None` matches any scope.
    pub scope: Option<u8>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    /// `RTPROT_*`. When adding, `None` means [`RTPROT_STATIC`]; when deleting, `None` matches
    /// any protocol.
    pub protocol: Option<u8>,
}

impl RouteSpec {
    /// A route to `dst` with everything else unset.
    pub fn new(dst: IpNetwork) -> RouteSpec {
        RouteSpec {
            dst,
            gw: None,
            oif: None,
            metric: None,
            table: None,
            scope: None,
            mtu: None,
            advmss: None,
            protocol: None,
        }
    }
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.dst.network(), self.dst.prefix())?;
        if let Some(gw) = self.gw {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev #{oif}")?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        if let Some(t) = self.table {
            write!(f, " table {t}")?;
        }
        if let Some(p) = self.protocol {
            write!(f, " proto {p}")?;
        }
        Ok(())
    }
}

/// A route as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub metric: Option<u32>,
    /// Always set.
    pub table: Option<u32>,
    /// Always set.
    pub scope: Option<u8>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    /// `RTPROT_*`: 2 kernel, 3 boot, 4 static, ...
    pub protocol: u8,
}

impl RouteInfo {
    /// The spec that deletes exactly this route.
    pub fn spec(&self) -> RouteSpec {
        RouteSpec {
            dst: self.dst,
            gw: self.gw,
            oif: self.oif,
            metric: self.metric,
            table: self.table,
            scope: self.scope,
            mtu: None,
            advmss: None,
            protocol: Some(self.protocol),
        }
    }
}

fn message(spec: &RouteSpec, deleting: bool) -> Result<RouteMessage> {
    let invalid = |e| Error::Invalid(format!("route {spec}: {e}"));
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(spec.dst.network(), spec.dst.prefix())
        .map_err(invalid)?;
    if let Some(gw) = spec.gw {
        if gw.is_ipv4() != spec.dst.is_ipv4() {
            return Err(Error::Invalid(format!(
                "route {spec}: gateway and destination families differ"
            )));
        }
        b = b.gateway(gw).map_err(invalid)?;
    }
    if let Some(oif) = spec.oif {
        b = b.output_interface(oif);
    }
    if let Some(m) = spec.metric {
        b = b.priority(m);
    }
    if let Some(t) = spec.table {
        b = b.table_id(t);
    }
    let scope = match (spec.scope, deleting) {
        (Some(s), _) => RouteScope::from(s),
        // RT_SCOPE_NOWHERE is the kernel's "any scope" on delete.
        (None, true) => RouteScope::NoWhere,
        (None, false) if spec.gw.is_none() => RouteScope::Link,
        (None, false) => RouteScope::Universe,
    };
    b = b.scope(scope);
    if deleting {
        // 0 = wildcard for the kernel's delete matching.
        b = b
            .protocol(RouteProtocol::from(spec.protocol.unwrap_or(0)))
            .kind(RouteType::Unspec);
    } else if let Some(p) = spec.protocol {
        b = b.protocol(RouteProtocol::from(p));
    }
    let mut msg = b.build();
    let mut metrics = Vec::new();
    if let Some(v) = spec.mtu {
        metrics.push(RouteMetric::Mtu(v));
    }
    if let Some(v) = spec.advmss {
        metrics.push(RouteMetric::Advmss(v));
    }
    if !metrics.is_empty() {
        msg.attributes.push(RouteAttribute::Metrics(metrics));
    }
    Ok(msg)
}

fn addr(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

fn parse(m: RouteMessage) -> Option<RouteInfo> {
    let h = &m.header;
    let unspecified = match h.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut r = RouteInfo {
        dst: IpNetwork::new(unspecified, h.destination_prefix_length).ok()?,
        gw: None,
        oif: None,
        metric: None,
        table: Some(u32::from(h.table)),
        scope: Some(h.scope.into()),
        mtu: None,
        advmss: None,
        protocol: h.protocol.into(),
    };
    for attr in m.attributes {
        match attr {
            RouteAttribute::Destination(a) => {
                r.dst = IpNetwork::new(addr(a)?, h.destination_prefix_length).ok()?
            }
            RouteAttribute::Gateway(a) => r.gw = addr(a),
            RouteAttribute::Oif(i) => r.oif = Some(i),
            RouteAttribute::Priority(p) => r.metric = Some(p),
            RouteAttribute::Table(t) => r.table = Some(t),
            RouteAttribute::Metrics(ms) => {
                for metric in ms {
                    match metric {
                        RouteMetric::Mtu(v) => r.mtu = Some(v),
                        RouteMetric::Advmss(v) => r.advmss = Some(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(r)
}

impl NsHandle {
    /// Adds a route; an identical route already present is `Error::Exists`.
    pub fn add_route(&self, spec: &RouteSpec) -> Result<()> {
        self.ack(
            "add route",
            spec,
            RouteNetlinkMessage::NewRoute(message(spec, false)?),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Deletes the first route matching `spec`; none is `Error::NotFound`.
    pub fn del_route(&self, spec: &RouteSpec) -> Result<()> {
        self.ack(
            "delete route",
            spec,
            RouteNetlinkMessage::DelRoute(message(spec, true)?),
            0,
        )
    }

    /// Unicast routes of one family in every table except `local`, without cached clones.
    pub fn routes(&self, v6: bool) -> Result<Vec<RouteInfo>> {
        let mut req = RouteMessage::default();
        req.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        req.header.table = RouteHeader::RT_TABLE_UNSPEC;
        let msgs = self.dump("list", "routes", RouteNetlinkMessage::GetRoute(req))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.kind == RouteType::Unicast
                        && !r.header.flags.contains(RouteFlags::Cloned) =>
                {
                    parse(r)
                }
                _ => None,
            })
            .filter(|r| r.table != Some(RT_TABLE_LOCAL))
            .collect())
    }
}
