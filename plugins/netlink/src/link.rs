//! Links: query, create (bridge, veth with the peer born in another namespace), change, delete.

use std::os::fd::{AsRawFd, BorrowedFd};

use rtnetlink::packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, BridgePortState, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind,
    InfoPortData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::error::{Error, Result};
use crate::handle::NsHandle;
use crate::mac::format_mac;

/// `IFLA_IFALIAS` (linux/if_link.h).
const IFLA_IFALIAS: u16 = 20;

/// `IFLA_IFALIAS` sent without the NUL that `LinkAttribute::IfAlias` appends: the kernel counts
/// it against the 255-byte limit, so a 255-byte alias would be refused (ERANGE).
fn alias_attr(alias: &str) -> LinkAttribute {
    LinkAttribute::Other(DefaultNla::new(IFLA_IFALIAS, alias.as_bytes().to_vec()))
}

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
    /// `IFLA_OPERSTATE` is `IF_OPER_UP`: the kernel's link watch has seen the carrier and
    /// activated the device's queueing. It runs asynchronously after a carrier change, so a link
    /// that was just brought up can be `up` without being `oper_up` yet.
    pub oper_up: bool,
    /// Index of the master (bridge) this link is enslaved to.
    pub master: Option<u32>,
    pub promisc: bool,
    /// `IFLA_LINK_NETNSID`: set when the link's peer (`peer_index`) lives in another namespace.
    pub link_netnsid: Option<i32>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the `link_netnsid` namespace when set). It
    /// may equal `index`: indexes are per namespace, so a peer elsewhere can have the same one.
    pub peer_index: Option<u32>,
    /// Bridge-port settings, present when the link is enslaved to a bridge.
    pub bridge_port: Option<BridgePort>,
    /// `IFLA_IFALIAS` (`ip link set DEV alias TEXT`); `None` when unset or empty.
    pub alias: Option<String>,
}

/// A veth pair for [`NsHandle::create_veth_with`]: start from [`VethSpec::new`] and set what
/// differs from the defaults (`..VethSpec::new(..)`).
#[derive(Debug, Clone, Copy)]
pub struct VethSpec<'a> {
    /// The end created in the handle's namespace, up.
    pub name: &'a str,
    pub mtu: Option<u32>,
    /// Bridge to enslave the host end to.
    pub master: Option<u32>,
    /// `IFLA_IFALIAS` of the host end.
    pub alias: Option<&'a str>,
    /// Whether the host end gets an IPv6 link-local address (the kernel's default). A bridge
    /// port never uses one, and without it the port sends no DAD probes, MLD reports or router
    /// solicitations, each of which the bridge floods to every other port: with 1000 containers
    /// on a bridge that flood is a large part of the kernel's work per ADD.
    pub ipv6_link_local: bool,
    /// The end created directly inside `peer_ns`, down.
    pub peer_name: &'a str,
    pub peer_ns: BorrowedFd<'a>,
    pub peer_mac: Option<[u8; 6]>,
    pub peer_mtu: Option<u32>,
}

impl<'a> VethSpec<'a> {
    /// `name` here and `peer_name` in `peer_ns`, with everything else unset.
    pub fn new(name: &'a str, peer_name: &'a str, peer_ns: BorrowedFd<'a>) -> VethSpec<'a> {
        VethSpec {
            name,
            mtu: None,
            master: None,
            alias: None,
            ipv6_link_local: true,
            peer_name,
            peer_ns,
            peer_mac: None,
            peer_mtu: None,
        }
    }
}

/// The bridge-port settings we manage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgePort {
    pub hairpin: bool,
    pub isolated: bool,
    /// `IFLA_BRPORT_STATE`. The kernel enables a port (`Disabled` to `Forwarding` at once when
    /// the bridge runs no STP) from the link-watch work after the port's carrier comes up, which
    /// runs asynchronously: a port whose veth peer was just set up may still be `Disabled`.
    pub state: PortState,
}

/// A bridge port's STP state (`BR_STATE_*`, linux/if_bridge.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortState {
    /// No carrier yet, or administratively down: the bridge drops its frames.
    #[default]
    Disabled,
    /// STP's forward-delay stages, only seen with STP on.
    Listening,
    Learning,
    Forwarding,
    /// STP found a loop through this port.
    Blocking,
    Other(u8),
}

impl From<BridgePortState> for PortState {
    fn from(s: BridgePortState) -> PortState {
        match s {
            BridgePortState::Disabled => PortState::Disabled,
            BridgePortState::Listening => PortState::Listening,
            BridgePortState::Learning => PortState::Learning,
            BridgePortState::Forwarding => PortState::Forwarding,
            BridgePortState::Blocking => PortState::Blocking,
            BridgePortState::Other(v) => PortState::Other(v),
            // The enum is non-exhaustive: whatever a later version adds.
            other => PortState::Other(u8::from(other)),
        }
    }
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
            oper_up: false,
            master: None,
            promisc: m.header.flags.contains(LinkFlags::Promisc),
            link_netnsid: None,
            peer_index: None,
            bridge_port: None,
            alias: None,
        };
        for attr in m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Address(a) => link.mac = a.try_into().ok(),
                LinkAttribute::Mtu(v) => link.mtu = v,
                LinkAttribute::Controller(i) if i != 0 => link.master = Some(i),
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(id),
                // 0: a veth whose peer is gone. The link's own index is a real answer too: the
                // kernel leaves IFLA_LINK out when it equals the index, except when the peer is in
                // another namespace (IFLA_LINK_NETNSID), where it always sends it.
                LinkAttribute::Link(i) if i != 0 => link.peer_index = Some(i),
                LinkAttribute::IfAlias(a) if !a.is_empty() => link.alias = Some(a),
                LinkAttribute::OperState(s) => link.oper_up = s == State::Up,
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
                                        InfoBridgePort::State(s) => port.state = s.into(),
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
        // Kernels without "rtnetlink: always put IFLA_LINK for links with a link-netnsid" leave
        // IFLA_LINK out whenever it equals the index: a veth with a peer elsewhere and no
        // IFLA_LINK has a peer of its own index.
        if link.peer_index.is_none()
            && link.link_netnsid.is_some()
            && link.kind.as_deref() == Some("veth")
        {
            link.peer_index = Some(link.index);
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
    /// configuring it). Returns the host end's index. [`NsHandle::create_veth_with`] takes the
    /// same as a [`VethSpec`], plus an alias.
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
        self.create_veth_with(&VethSpec {
            mtu: host_mtu,
            master,
            peer_mac,
            peer_mtu,
            ..VethSpec::new(host_name, peer_name, peer_ns)
        })
    }

    /// Creates the veth pair `spec` describes (see [`NsHandle::create_veth`]) and returns the
    /// host end's index. With `spec.alias`, a failure to set it deletes the new pair again, so
    /// the call either creates an aliased pair or nothing.
    pub fn create_veth_with(&self, spec: &VethSpec<'_>) -> Result<u32> {
        self.create_veth_link(spec).map(|l| l.index)
    }

    /// [`NsHandle::create_veth_with`], returning the host end as the kernel described it when it
    /// was created: its name, index, MAC and MTU are final; `master`, `up` and `alias` may not be
    /// yet. It saves a lookup (an RTNL round trip) to callers that need the MAC.
    pub fn create_veth_link(&self, spec: &VethSpec<'_>) -> Result<Link> {
        // The kernel resolves IFLA_NET_NS_FD while handling the request; `peer_ns` is borrowed
        // for the whole call, so the fd stays open until then.
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(spec.peer_name)
            .setns_by_fd(spec.peer_ns.as_raw_fd());
        if let Some(mac) = spec.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        if let Some(mtu) = spec.peer_mtu {
            peer = peer.mtu(mtu);
        }
        let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(spec.name)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(m) = spec.master {
            host = host.controller(m);
        }
        if let Some(mtu) = spec.mtu {
            host = host.mtu(mtu);
        }
        let what = format!(
            "veth {} (peer {} in another netns)",
            spec.name, spec.peer_name
        );
        // NLM_F_ECHO: recent kernels answer with the new link, which saves a lookup by name
        // (older ones only acknowledge). The alias cannot ride along: the kernel ignores
        // IFLA_IFALIAS in an RTM_NEWLINK that creates a link.
        let echoed = self.ack_echo(
            "create",
            &what,
            RouteNetlinkMessage::NewLink(host.build()),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
        )?;
        let link = match echoed
            .into_iter()
            .filter_map(as_link)
            .find(|l| l.name == spec.name && l.index != 0)
        {
            Some(l) => l,
            None => self.link_by_name(spec.name)?.ok_or_else(|| {
                Error::NotFound(format!("create {what}: gone right after creation"))
            })?,
        };
        let index = link.index;
        if let Err(e) = self.after_create(index, spec) {
            // Deleting one end deletes the pair.
            if let Err(undo) = self.del_link(index) {
                tracing::warn!(error = %undo, %what, "setting up the new pair failed, and so did deleting it");
            }
            return Err(e);
        }
        Ok(link)
    }

    /// What the kernel refuses in the creating RTM_NEWLINK (the alias, and IPv6 settings, which
    /// need the device's inet6 state), in one change of the host end. It runs before the peer is
    /// up, so the host end has no carrier yet and IPv6 has not started on it.
    fn after_create(&self, index: u32, spec: &VethSpec<'_>) -> Result<()> {
        let set_alias = || {
            spec.alias
                .map_or(Ok(()), |alias| self.set_alias(index, alias))
        };
        if spec.ipv6_link_local {
            return set_alias();
        }
        let no_link_local =
            LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
                In6AddrGenMode::None,
            )])]);
        let mut change = LinkUnspec::new_with_index(index).append_extra_attribute(no_link_local);
        if let Some(alias) = spec.alias {
            change = change.append_extra_attribute(alias_attr(alias));
        }
        match self.change("configure", index, change) {
            // No IPv6 in this kernel (ipv6.disable=1): nothing to switch off.
            Err(Error::Netlink { errno, .. }) if errno == libc::EAFNOSUPPORT => set_alias(),
            other => other,
        }
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

    /// Sets `IFLA_IFALIAS`, a free-form description of up to 255 bytes; `""` removes it.
    pub fn set_alias(&self, idx: u32, alias: &str) -> Result<()> {
        self.change(
            "set alias of",
            idx,
            LinkUnspec::new_with_index(idx).append_extra_attribute(alias_attr(alias)),
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

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

    use super::Link;

    fn veth(index: u32, attrs: Vec<LinkAttribute>) -> Link {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes = attrs;
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Veth,
            )]));
        Link::from_message(m)
    }

    #[test]
    fn peer_index_from_ifla_link() {
        // As current kernels report a peer elsewhere with the same index: IFLA_LINK is sent.
        let l = veth(
            7,
            vec![LinkAttribute::LinkNetNsId(0), LinkAttribute::Link(7)],
        );
        assert_eq!(l.peer_index, Some(7));
        // Older kernels leave it out when it equals the index.
        let l = veth(7, vec![LinkAttribute::LinkNetNsId(0)]);
        assert_eq!(l.peer_index, Some(7));
        // Peer in the same namespace, and a peer that is gone (IFLA_LINK 0).
        let l = veth(7, vec![LinkAttribute::Link(8)]);
        assert_eq!((l.peer_index, l.link_netnsid), (Some(8), None));
        let l = veth(7, vec![LinkAttribute::Link(0)]);
        assert_eq!(l.peer_index, None);
        let l = veth(7, vec![]);
        assert_eq!(l.peer_index, None);
    }

    #[test]
    fn oper_state_and_bridge_port_state() {
        use rtnetlink::packet_route::link::{BridgePortState, InfoBridgePort, InfoPortData, State};
        let port = |state| {
            LinkAttribute::LinkInfo(vec![LinkInfo::PortData(InfoPortData::BridgePort(vec![
                InfoBridgePort::State(state),
            ]))])
        };
        let l = veth(
            4,
            vec![
                LinkAttribute::OperState(State::Up),
                port(BridgePortState::Forwarding),
            ],
        );
        assert!(l.oper_up);
        assert_eq!(l.bridge_port.unwrap().state, super::PortState::Forwarding);
        // Right after the peer came up, before the kernel's link watch ran.
        let l = veth(
            4,
            vec![
                LinkAttribute::OperState(State::Unknown),
                port(BridgePortState::Disabled),
            ],
        );
        assert!(!l.oper_up);
        assert_eq!(l.bridge_port.unwrap().state, super::PortState::Disabled);
        let l = veth(4, vec![port(BridgePortState::Listening)]);
        assert_eq!(l.bridge_port.unwrap().state, super::PortState::Listening);
    }

    #[test]
    fn empty_alias_is_none() {
        let l = veth(3, vec![LinkAttribute::IfAlias(String::new())]);
        assert_eq!(l.alias, None);
        let l = veth(3, vec![LinkAttribute::IfAlias("a:b".into())]);
        assert_eq!(l.alias.as_deref(), Some("a:b"));
    }
}
