//! Links: query, create (bridge, veth with the peer born in another namespace), change, delete.

use std::os::fd::{AsRawFd, BorrowedFd};

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::error::{Error, Result};
use crate::handle::NsHandle;
use crate::mac::format_mac;

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: "bridge", "veth", ...; `None` for devices without one (`lo`, physical).
    pub kind: Option<String>,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Index of the master (bridge) this link is enslaved to.
    pub master: Option<u32>,
    pub promisc: bool,
    /// `IFLA_LINK_NETNSID`: set when the link's peer (`peer_index`) lives in another namespace.
    pub link_netnsid: Option<i32>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the `link_netnsid` namespace when set).
    pub peer_index: Option<u32>,
    /// Bridge-port settings, present when the link is enslaved to a bridge.
    pub bridge_port: Option<BridgePort>,
}

/// The bridge-port settings we manage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgePort {
    pub hairpin: bool,
    pub isolated: bool,
}

impl Link {
    fn from_message(m: LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            master: None,
            promisc: m.header.flags.contains(LinkFlags::Promisc),
            link_netnsid: None,
            peer_index: None,
            bridge_port: None,
        };
        for attr in m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Address(a) => link.mac = a.try_into().ok(),
                LinkAttribute::Mtu(v) => link.mtu = v,
                LinkAttribute::Controller(i) if i != 0 => link.master = Some(i),
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(id),
                LinkAttribute::Link(i) if i != 0 && i != m.header.index => {
                    link.peer_index = Some(i)
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
                            LinkInfo::PortData(InfoPortData::BridgePort(opts)) => {
                                let mut port = BridgePort::default();
                                for o in opts {
                                    match o {
                                        InfoBridgePort::HairpinMode(v) => port.hairpin = v,
                                        InfoBridgePort::Isolated(v) => port.isolated = v,
                                        _ => {}
                                    }
                                }
                                link.bridge_port = Some(port);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

fn as_link(m: RouteNetlinkMessage) -> Option<Link> {
    match m {
        RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
        _ => None,
    }
}

/// What to call link `idx` in error messages.
fn obj(idx: u32) -> String {
    format!("link #{idx}")
}

impl NsHandle {
    pub fn links(&self) -> Result<Vec<Link>> {
        let msgs = self.dump(
            "list",
            "links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(msgs.into_iter().filter_map(as_link).collect())
    }

    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let msg = LinkUnspec::new_with_name(name).build();
        let found = self.get_one("get link", name, RouteNetlinkMessage::GetLink(msg))?;
        Ok(found.and_then(as_link))
    }

    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let msg = LinkUnspec::new_with_index(index).build();
        let found = self.get_one("get", obj(index), RouteNetlinkMessage::GetLink(msg))?;
        Ok(found.and_then(as_link))
    }

    /// Creates bridge `name`, already up. An existing link of that name is `Error::Exists`;
    /// `vlan_filtering` on a kernel without bridge VLAN support fails with errno EOPNOTSUPP.
    pub fn create_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        vlan_filtering: bool,
    ) -> Result<Link> {
        let mut b = LinkBridge::new(name);
        // Only sent when asked for: kernels built without CONFIG_BRIDGE_VLAN_FILTERING reject
        // the attribute (EOPNOTSUPP) even when it says "off".
        if vlan_filtering {
            b = b.vlan_filtering(true);
        }
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        let what = format!("bridge {name}");
        self.ack(
            "create",
            &what,
            RouteNetlinkMessage::NewLink(b.build()),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        self.link_by_name(name)?
            .ok_or_else(|| Error::NotFound(format!("create {what}: gone right after creation")))
    }

    /// Creates a veth pair in one request: `host_name` here (already up, enslaved to `master`
    /// when given) and `peer_name` directly inside `peer_ns` (down, so the caller can finish
    /// configuring it). Returns the host end's index.
    #[allow(clippy::too_many_arguments)] // mirrors the netlink request one-to-one
    pub fn create_veth(
        &self,
        host_name: &str,
        host_mtu: Option<u32>,
        master: Option<u32>,
        peer_name: &str,
        peer_ns: BorrowedFd<'_>,
        peer_mac: Option<[u8; 6]>,
        peer_mtu: Option<u32>,
    ) -> Result<u32> {
        // The kernel resolves IFLA_NET_NS_FD while handling the request; `peer_ns` is borrowed
        // for the whole call, so the fd stays open until then.
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name)
            .setns_by_fd(peer_ns.as_raw_fd());
        if let Some(mac) = peer_mac {
            peer = peer.address(mac.to_vec());
        }
        if let Some(mtu) = peer_mtu {
            peer = peer.mtu(mtu);
        }
        let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host_name)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(m) = master {
            host = host.controller(m);
        }
        if let Some(mtu) = host_mtu {
            host = host.mtu(mtu);
        }
        let what = format!("veth {host_name} (peer {peer_name} in another netns)");
        self.ack(
            "create",
            &what,
            RouteNetlinkMessage::NewLink(host.build()),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        let link = self
            .link_by_name(host_name)?
            .ok_or_else(|| Error::NotFound(format!("create {what}: gone right after creation")))?;
        Ok(link.index)
    }

    /// Applies an `ip link set`-style change (RTM_NEWLINK without NLM_F_CREATE).
    fn change(&self, op: &'static str, idx: u32, b: LinkMessageBuilder<LinkUnspec>) -> Result<()> {
        self.ack(op, obj(idx), RouteNetlinkMessage::NewLink(b.build()), 0)
    }

    pub fn set_up(&self, idx: u32) -> Result<()> {
        self.change("set up", idx, LinkUnspec::new_with_index(idx).up())
    }

    pub fn set_down(&self, idx: u32) -> Result<()> {
        self.change("set down", idx, LinkUnspec::new_with_index(idx).down())
    }

    /// Enslaves `idx` to `master`; `master == 0` detaches it.
    pub fn set_master(&self, idx: u32, master: u32) -> Result<()> {
        self.change(
            "set master of",
            idx,
            LinkUnspec::new_with_index(idx).controller(master),
        )
    }

    pub fn set_mtu(&self, idx: u32, mtu: u32) -> Result<()> {
        self.change("set mtu of", idx, LinkUnspec::new_with_index(idx).mtu(mtu))
    }

    pub fn set_mac(&self, idx: u32, mac: [u8; 6]) -> Result<()> {
        let op = "set mac of";
        self.change(
            op,
            idx,
            LinkUnspec::new_with_index(idx).address(mac.to_vec()),
        )
        .map_err(|e| match e {
            Error::Netlink { op, errno, msg } => Error::Netlink {
                op,
                errno,
                msg: format!("{msg} (mac {})", format_mac(mac)),
            },
            e => e,
        })
    }

    pub fn set_promisc(&self, idx: u32, on: bool) -> Result<()> {
        self.change(
            "set promisc of",
            idx,
            LinkUnspec::new_with_index(idx).promiscuous(on),
        )
    }

    /// Renames a link (it must be down).
    pub fn set_name(&self, idx: u32, name: &str) -> Result<()> {
        self.change("rename", idx, LinkUnspec::new_with_index(idx).name(name))
    }

    /// Sets bridge-port options of `idx` (which must be enslaved to a bridge); `None` leaves an
    /// option as it is.
    pub fn set_bridge_port(
        &self,
        idx: u32,
        hairpin: Option<bool>,
        isolated: Option<bool>,
    ) -> Result<()> {
        if hairpin.is_none() && isolated.is_none() {
            return Ok(());
        }
        // IFLA_INFO_SLAVE_DATA on RTM_NEWLINK: the kernel applies it through the same
        // br_setport() as IFLA_PROTINFO, and netlink-packet-route types it (its IFLA_PROTINFO
        // bridge attributes are untyped).
        let mut b = LinkBridgePort::new(idx);
        if let Some(v) = hairpin {
            b = b.hairpin(v);
        }
        if let Some(v) = isolated {
            b = b.isolated(v);
        }
        self.ack(
            "set bridge-port options of",
            obj(idx),
            RouteNetlinkMessage::NewLink(b.build()),
            0,
        )
    }

    pub fn del_link(&self, idx: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(idx).build();
        self.ack("delete", obj(idx), RouteNetlinkMessage::DelLink(msg), 0)
    }

    /// Deletes link `name`; `Ok(false)` when there is none.
    pub fn del_link_by_name(&self, name: &str) -> Result<bool> {
        let msg = LinkUnspec::new_with_name(name).build();
        match self.ack("delete link", name, RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(()) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
