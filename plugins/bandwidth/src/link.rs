//! The links bandwidth needs: the container interface's veth peer, and the ifb device. Raw
//! rtnetlink over a [`tether_netlink::Rtnl`], since the facade does not model ifb devices.

use crate::Error;
use futures::TryStreamExt;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use nix::errno::Errno;
use rtnetlink::{Handle, LinkIfb, LinkUnspec};
use std::os::fd::AsFd;
use std::path::Path;
use tether_netlink::{Rtnl, rtnl_errno};

/// The errno of a kernel NACK, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    rtnl_errno(e).map(Errno::from_raw)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<InfoKind>,
    pub mtu: u32,
    pub tx_qlen: u32,
    pub mac: Option<[u8; 6]>,
    /// IFLA_LINK: for a veth, the peer's index (in the peer's namespace).
    pub link: Option<u32>,
}

fn link_of(m: LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        kind: None,
        mtu: 0,
        tx_qlen: 0,
        mac: None,
        link: None,
    };
    for a in m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n,
            LinkAttribute::Mtu(v) => l.mtu = v,
            LinkAttribute::TxQueueLen(v) => l.tx_qlen = v,
            LinkAttribute::Address(b) => l.mac = b.as_slice().try_into().ok(),
            LinkAttribute::Link(i) => l.link = Some(i),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(k);
                    }
                }
            }
            _ => {}
        }
    }
    l
}

async fn get_one(req: rtnetlink::LinkGetRequest, what: String) -> Result<Option<Link>, Error> {
    match req.execute().try_next().await {
        Ok(m) => Ok(m.map(link_of)),
        Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
        Err(source) => Err(Error::Netlink {
            what,
            source: source.into(),
        }),
    }
}

pub async fn by_name(h: &Handle, name: &str) -> Result<Option<Link>, Error> {
    let req = h.link().get().match_name(name.to_string());
    get_one(req, format!("failed to look up link {name}")).await
}

pub async fn by_index(h: &Handle, index: u32) -> Result<Option<Link>, Error> {
    let req = h.link().get().match_index(index);
    get_one(req, format!("failed to look up link {index}")).await
}

/// The index (in the peer's namespace) of the veth peer of `ifname` in the namespace at `netns`.
pub fn veth_peer_index(netns: &Path, ifname: &str) -> Result<u32, Error> {
    let ns = cni::netns::open(netns)?;
    let l = Rtnl::for_netns(ns.as_fd())?
        .block_on(async |h| by_name(&h, ifname).await)?
        .ok_or_else(|| Error::NotFound(format!("interface {ifname} not found in the container")))?;
    match (&l.kind, l.link) {
        (Some(InfoKind::Veth), Some(peer)) if peer > 0 => Ok(peer),
        _ => Err(Error::NotFound(format!(
            "container interface {ifname} has no veth peer"
        ))),
    }
}

/// Creates the ifb `name` (up, with the host veth's MTU and queue length), or takes over an
/// existing ifb of that name: the name is derived from network and container, so one that exists
/// is left from an earlier ADD of the same attachment.
pub async fn ensure_ifb(h: &Handle, name: &str, mtu: u32, tx_qlen: u32) -> Result<Link, Error> {
    let msg = LinkIfb::new(name).mtu(mtu).txqueuelen(tx_qlen).up().build();
    match h.link().add(msg).execute().await {
        Ok(()) => {}
        Err(e) if errno(&e) == Some(Errno::EEXIST) => {
            let l = by_name(h, name).await?.ok_or_else(|| {
                Error::NotFound(format!("link {name} vanished while being reused"))
            })?;
            if l.kind != Some(InfoKind::Ifb) {
                return Err(Error::Config(format!(
                    "a link named {name} exists and is not an ifb device"
                )));
            }
            let up = LinkUnspec::new_with_index(l.index).mtu(mtu).up().build();
            h.link()
                .set(up)
                .execute()
                .await
                .map_err(|source| Error::Netlink {
                    what: format!("failed to set up {name}"),
                    source: source.into(),
                })?;
        }
        Err(source) => {
            return Err(Error::Netlink {
                what: format!("failed to create ifb device {name}"),
                source: source.into(),
            });
        }
    }
    by_name(h, name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("ifb device {name} vanished after creation")))
}

/// Deletes the link `name`; a missing link is success.
pub async fn delete(h: &Handle, name: &str) -> Result<(), Error> {
    let Some(l) = by_name(h, name).await? else {
        return Ok(());
    };
    match h.link().del(l.index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(()),
        Err(source) => Err(Error::Netlink {
            what: format!("failed to delete {name}"),
            source: source.into(),
        }),
    }
}
