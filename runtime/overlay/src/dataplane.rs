//! The kernel side of the agent: the VXLAN device and, per peer, flannel's three entries.
//!
//! ```text
//!   this host (subnet 10.200.1.0/24)                         peer (subnet 10.200.2.0/24, 192.168.50.3)
//!   tvx-<vni>  10.200.1.0/32  mac 02:74:<public ip>          tvx-<vni> 10.200.2.0/32  mac M
//!     neighbour  10.200.2.0 lladdr M          permanent      (1) the route's next hop resolves
//!     fdb        M dst 192.168.50.3 self      permanent      (2) the frame's outer destination
//!     route      10.200.2.0/24 via 10.200.2.0 onlink          (3) only now can packets use it
//! ```
//!
//! The order is flannel's: the route goes in last, so no packet ever takes a route whose
//! neighbour or FDB entry is missing (the "first packets lost" and "half-programmed FDB"
//! complaints); a failed route rolls back the other two. Everything is replace-or-create, so
//! re-programming a peer is harmless, and [`Dataplane::reconcile`] compares what the kernel
//! holds with what it should and fixes the difference (entries or the device deleted by hand).
//!
//! The host-gw backend uses the same code with no device: one route per peer, `subnet via
//! public_ip dev <underlay>`, and no neighbour or FDB entry.

use crate::config::{Backend, NetworkConfig, vtep_mac};
use crate::error::{Error, Result};
use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

/// Another host, as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    pub subnet: Ipv4Network,
    pub public_ip: Ipv4Addr,
    pub mac: [u8; 6],
}

/// The underlay interface the VXLAN device sends through.
#[derive(Debug, Clone)]
pub struct Underlay {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    /// Its first IPv4 address, with the prefix: the public IP and the underlay network.
    pub addr: Ipv4Network,
}

fn nl(what: &str, e: rtnetlink::Error) -> Error {
    Error::netlink(format!("{what}: {e}"))
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() != 0 => Some(-m.raw_code()),
        _ => None,
    }
}

/// Deleting what is already gone is success.
fn gone_ok(
    r: std::result::Result<(), rtnetlink::Error>,
) -> std::result::Result<(), rtnetlink::Error> {
    match r {
        Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ESRCH | libc::ENODEV)) => Ok(()),
        r => r,
    }
}

/// A netlink connection in the agent's network namespace, driven by the agent's runtime.
pub fn connect() -> Result<Handle> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| Error::netlink(format!("open netlink: {e}")))?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(l) => Ok(l),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl(&format!("look up link {name}"), e)),
    }
}

fn link_mtu(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// The interface `name` with its MTU and first IPv4 address; a clear error if it is missing.
pub async fn underlay(h: &Handle, name: &str) -> Result<Underlay> {
    let l = link_by_name(h, name)
        .await?
        .ok_or_else(|| Error::invalid(format!("--iface {name}: no such interface on this host")))?;
    let index = l.header.index;
    let mut addrs = h.address().get().set_link_index_filter(index).execute();
    while let Some(a) = addrs
        .try_next()
        .await
        .map_err(|e| nl("list addresses", e))?
    {
        for attr in &a.attributes {
            if let netlink_packet_route::address::AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                let addr = Ipv4Network::new(*ip, a.header.prefix_len)
                    .map_err(|e| Error::netlink(format!("address of {name}: {e}")))?;
                return Ok(Underlay {
                    name: name.to_string(),
                    index,
                    mtu: link_mtu(&l).unwrap_or(1500),
                    addr,
                });
            }
        }
    }
    Err(Error::invalid(format!(
        "--iface {name}: the interface has no IPv4 address for VXLAN to send from"
    )))
}

/// The VXLAN device of one overlay network on this host, and its peers' entries.
pub struct Dataplane {
    h: Handle,
    pub device: String,
    cfg: NetworkConfig,
    underlay: Underlay,
    subnet: Ipv4Network,
    pub mtu: u32,
    pub mac: [u8; 6],
}

impl Dataplane {
    pub fn new(h: Handle, cfg: &NetworkConfig, underlay: Underlay, subnet: Ipv4Network) -> Self {
        Dataplane {
            h,
            device: tether_overlay_state::vxlan_device(cfg.vni),
            cfg: cfg.clone(),
            mtu: match cfg.backend {
                Backend::Vxlan => underlay.mtu.saturating_sub(crate::config::VXLAN_OVERHEAD),
                Backend::HostGw => underlay.mtu,
            },
            mac: vtep_mac(underlay.addr.ip()),
            underlay,
            subnet,
        }
    }

    /// The host subnet changed (the lease was lost and another one taken): re-address the device.
    pub async fn set_subnet(&mut self, subnet: Ipv4Network) -> Result<()> {
        if let Some(idx) = self.index().await? {
            let old = self.subnet.network();
            let msgs: Vec<_> = self
                .h
                .address()
                .get()
                .set_link_index_filter(idx)
                .execute()
                .try_collect()
                .await
                .map_err(|e| nl("list addresses", e))?;
            for m in msgs {
                let is_old = m.attributes.iter().any(|a| {
                    matches!(a, netlink_packet_route::address::AddressAttribute::Address(IpAddr::V4(ip)) if *ip == old)
                });
                if is_old {
                    gone_ok(self.h.address().del(m).execute().await)
                        .map_err(|e| nl("remove old device address", e))?;
                }
            }
            self.subnet = subnet;
            self.h
                .address()
                .add(idx, IpAddr::V4(subnet.network()), 32)
                .replace()
                .execute()
                .await
                .map_err(|e| nl("address the VXLAN device", e))?;
        }
        self.subnet = subnet;
        Ok(())
    }

    async fn index(&self) -> Result<Option<u32>> {
        Ok(link_by_name(&self.h, &self.device)
            .await?
            .map(|l| l.header.index))
    }

    /// Creates the device unless it exists; returns its index and whether it was created.
    pub async fn ensure_device(&self) -> Result<(u32, bool)> {
        if !self.vxlan() {
            // host-gw: the routes go out of the underlay interface itself.
            return Ok((self.underlay.index, false));
        }
        if let Some(l) = link_by_name(&self.h, &self.device).await? {
            let idx = l.header.index;
            let up = l
                .header
                .flags
                .contains(netlink_packet_route::link::LinkFlags::Up);
            if !up || link_mtu(&l) != Some(self.mtu) {
                self.configure(idx).await?;
            }
            return Ok((idx, false));
        }
        let msg = LinkVxlan::new(&self.device, self.cfg.vni)
            .dev(self.underlay.index)
            .local(self.underlay.addr.ip())
            .port(self.cfg.port)
            .learning(false)
            .mtu(self.mtu)
            .address(self.mac.to_vec())
            .build();
        match self.h.link().add(msg).execute().await {
            Ok(()) => {}
            // Another agent of this network on this host (or a race with ourselves): reuse it.
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(nl(&format!("create VXLAN device {}", self.device), e)),
        }
        let idx = self
            .index()
            .await?
            .ok_or_else(|| Error::netlink(format!("{} vanished after creation", self.device)))?;
        self.configure(idx).await?;
        Ok((idx, true))
    }

    async fn configure(&self, idx: u32) -> Result<()> {
        self.h
            .address()
            .add(idx, IpAddr::V4(self.subnet.network()), 32)
            .replace()
            .execute()
            .await
            .map_err(|e| nl(&format!("address {}", self.device), e))?;
        let up = LinkUnspec::new_with_index(idx).mtu(self.mtu).up().build();
        self.h
            .link()
            .set(up)
            .execute()
            .await
            .map_err(|e| nl(&format!("set {} up", self.device), e))
    }

    fn vxlan(&self) -> bool {
        self.cfg.backend == Backend::Vxlan
    }

    /// Whether host-gw can route to `ip` (on the underlay's link).
    pub fn reaches(&self, ip: Ipv4Addr) -> bool {
        self.vxlan()
            || Ipv4Network::new(self.underlay.addr.network(), self.underlay.addr.prefix())
                .is_ok_and(|n| n.contains(ip))
    }

    /// Everything this agent programmed: the VXLAN device (the kernel drops its neighbours, FDB
    /// entries and routes with it), or host-gw's routes one by one.
    pub async fn remove_all(&self, peers: &BTreeMap<Ipv4Network, PeerEntry>) -> Result<()> {
        if !self.vxlan() {
            for p in peers.values() {
                self.remove_peer(self.underlay.index, p).await?;
            }
            return Ok(());
        }
        if let Some(idx) = self.index().await? {
            gone_ok(self.h.link().del(idx).execute().await)
                .map_err(|e| nl(&format!("delete {}", self.device), e))?;
        }
        Ok(())
    }

    /// The next hop of a peer's subnet: its VTEP address over tvx, or its public IP (host-gw).
    fn gateway(&self, p: &PeerEntry) -> Ipv4Addr {
        if self.vxlan() {
            p.subnet.network()
        } else {
            p.public_ip
        }
    }

    fn route(&self, idx: u32, p: &PeerEntry) -> RouteMessage {
        let b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(p.subnet.network(), p.subnet.prefix())
            .gateway(self.gateway(p))
            .output_interface(idx);
        if self.vxlan() {
            b.onlink().build()
        } else {
            b.build()
        }
    }

    /// Neighbour, FDB entry, route, in that order; a failed route takes the other two back out.
    pub async fn add_peer(&self, idx: u32, p: &PeerEntry) -> Result<()> {
        let what = |s: &str| format!("{s} for peer {} ({})", p.subnet, p.public_ip);
        if !self.vxlan() {
            return self
                .h
                .route()
                .add(self.route(idx, p))
                .replace()
                .execute()
                .await
                .map_err(|e| nl(&what("add route"), e));
        }
        self.h
            .neighbours()
            .add(idx, IpAddr::V4(p.subnet.network()))
            .link_layer_address(&p.mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| nl(&what("add neighbour"), e))?;
        let fdb = self
            .h
            .neighbours()
            .add_bridge(idx, &p.mac)
            .destination(IpAddr::V4(p.public_ip))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await;
        if let Err(e) = fdb {
            let _ = self.del_neighbour(idx, p).await;
            return Err(nl(&what("add FDB entry"), e));
        }
        if let Err(e) = self
            .h
            .route()
            .add(self.route(idx, p))
            .replace()
            .execute()
            .await
        {
            let _ = self.del_fdb(idx, p).await;
            let _ = self.del_neighbour(idx, p).await;
            return Err(nl(&what("add route"), e));
        }
        Ok(())
    }

    /// Route, FDB entry, neighbour: the reverse order; what is already gone is fine.
    pub async fn remove_peer(&self, idx: u32, p: &PeerEntry) -> Result<()> {
        gone_ok(self.h.route().del(self.route(idx, p)).execute().await)
            .map_err(|e| nl(&format!("delete route to {}", p.subnet), e))?;
        if !self.vxlan() {
            return Ok(());
        }
        self.del_fdb(idx, p).await?;
        self.del_neighbour(idx, p).await
    }

    async fn del_neighbour(&self, idx: u32, p: &PeerEntry) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = idx;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                p.subnet.network(),
            )));
        gone_ok(self.h.neighbours().del(m).execute().await)
            .map_err(|e| nl(&format!("delete neighbour {}", p.subnet.network()), e))
    }

    async fn del_fdb(&self, idx: u32, p: &PeerEntry) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = idx;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(p.mac.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                p.public_ip,
            )));
        gone_ok(self.h.neighbours().del(m).execute().await)
            .map_err(|e| nl(&format!("delete FDB entry of {}", p.public_ip), e))
    }

    /// What the kernel holds on the device: neighbours (ip → mac), FDB (mac, dst), routes (dst, gw).
    async fn observe(&self, idx: u32) -> Result<Observed> {
        let mut o = Observed::default();
        // host-gw has no neighbours or FDB entries of its own (and eth0's are not ours).
        let families: &[AddressFamily] = if self.vxlan() {
            &[AddressFamily::Inet, AddressFamily::Bridge]
        } else {
            &[]
        };
        for &family in families {
            let msgs: Vec<NeighbourMessage> = self
                .h
                .neighbours()
                .get()
                .set_address_family(family)
                .execute()
                .try_collect()
                .await
                .map_err(|e| nl("list neighbours", e))?;
            for m in msgs.into_iter().filter(|m| m.header.ifindex == idx) {
                let mut dst = None;
                let mut mac = None;
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                            dst = Some(*ip)
                        }
                        // In AF_BRIDGE (FDB) messages the crate cannot tell the address family.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b))
                            if b.len() == 4 =>
                        {
                            dst = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                        }
                        NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                            mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                        }
                        _ => {}
                    }
                }
                let permanent = m.header.state == NeighbourState::Permanent;
                match (family, dst, mac) {
                    (AddressFamily::Inet, Some(ip), Some(mac)) if permanent => {
                        o.neigh.insert((ip, mac));
                    }
                    (AddressFamily::Bridge, Some(ip), Some(mac)) => {
                        o.fdb.insert((mac, ip));
                    }
                    _ => {}
                }
            }
        }
        let routes: Vec<RouteMessage> = self
            .h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl("list routes", e))?;
        for r in routes {
            let mut oif = None;
            let mut dst = None;
            let mut gw = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                    _ => {}
                }
            }
            if oif == Some(idx)
                && let (Some(dst), Some(gw)) = (dst, gw)
                && let Ok(net) = Ipv4Network::new(dst, r.header.destination_prefix_length)
                && self.cfg.is_host_subnet(net)
            {
                o.routes.insert((net, gw));
            }
        }
        Ok(o)
    }

    /// Makes the kernel match `peers`: recreates the device if it is gone, programs what is
    /// missing, removes what no peer explains. Returns what it had to fix, for the log.
    pub async fn reconcile(&self, peers: &BTreeMap<Ipv4Network, PeerEntry>) -> Result<Vec<String>> {
        let (idx, created) = self.ensure_device().await?;
        let mut fixed = Vec::new();
        if created {
            fixed.push(format!("recreated {}", self.device));
        }
        let o = self.observe(idx).await?;
        for p in peers.values() {
            let route = o.routes.contains(&(p.subnet, self.gateway(p)));
            let complete = route
                && (!self.vxlan()
                    || o.neigh.contains(&(p.subnet.network(), p.mac))
                        && o.fdb.contains(&(p.mac, p.public_ip)));
            if !complete {
                tracing::debug!(?p, ?o, "peer entries incomplete");
                self.add_peer(idx, p).await?;
                if !created {
                    fixed.push(format!(
                        "restored the entries of peer {} ({})",
                        p.subnet, p.public_ip
                    ));
                }
            }
        }
        // Entries of hosts that left while nobody was watching (e.g. before a restart).
        let want_routes: HashSet<_> = peers
            .values()
            .map(|p| (p.subnet, self.gateway(p)))
            .collect();
        for (net, gw) in o.routes.difference(&want_routes) {
            let m = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(net.network(), net.prefix())
                .gateway(*gw)
                .output_interface(idx)
                .build();
            gone_ok(self.h.route().del(m).execute().await)
                .map_err(|e| nl("delete stale route", e))?;
            fixed.push(format!("removed stale route {net}"));
        }
        let want_fdb: HashSet<_> = peers.values().map(|p| (p.mac, p.public_ip)).collect();
        for (mac, ip) in o.fdb.difference(&want_fdb) {
            let stale = PeerEntry {
                subnet: self.subnet,
                public_ip: *ip,
                mac: *mac,
            };
            self.del_fdb(idx, &stale).await?;
            fixed.push(format!("removed stale FDB entry {ip}"));
        }
        let want_neigh: HashSet<_> = peers
            .values()
            .map(|p| (p.subnet.network(), p.mac))
            .collect();
        for (ip, mac) in o.neigh.difference(&want_neigh) {
            let stale = PeerEntry {
                subnet: Ipv4Network::new(*ip, 32).expect("/32"),
                public_ip: Ipv4Addr::UNSPECIFIED,
                mac: *mac,
            };
            self.del_neighbour(idx, &stale).await?;
            fixed.push(format!("removed stale neighbour {ip}"));
        }
        Ok(fixed)
    }
}

#[derive(Debug, Default)]
struct Observed {
    neigh: HashSet<(Ipv4Addr, [u8; 6])>,
    fdb: HashSet<([u8; 6], Ipv4Addr)>,
    routes: HashSet<(Ipv4Network, Ipv4Addr)>,
}
