//! Namespace entry, the rtnetlink runtime, and the links bandwidth needs: the container
//! interface's veth peer, and the ifb device.
//!
//! Namespace switching is per OS thread, so [`in_netns`] runs its closure on a fresh scoped thread;
//! the plugin's main thread (the host namespace) never moves.

use crate::Error;
use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use rtnetlink::{Handle, LinkIfb, LinkUnspec};
use std::fs::File;
use std::path::Path;

/// Runs `f` on a short-lived thread inside the network namespace at `path`.
pub fn in_netns<T: Send>(
    path: &Path,
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    let ns = File::open(path).map_err(|source| Error::Io {
        what: format!("failed to open network namespace {}", path.display()),
        source,
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Io {
                what: format!("failed to enter network namespace {}", path.display()),
                source: e.into(),
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Runs `f` with an rtnetlink handle for the calling thread's namespace.
pub fn with_rtnl<T>(f: impl AsyncFnOnce(Handle) -> Result<T, Error>) -> Result<T, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| Error::Io {
            what: "failed to start the netlink runtime".into(),
            source,
        })?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| Error::Io {
            what: "failed to open a netlink socket".into(),
            source,
        })?;
        let task = tokio::spawn(conn);
        let r = f(handle).await;
        task.abort();
        r
    })
}

/// The errno of a netlink error, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| Errno::from_raw(-c.get())),
        _ => None,
    }
}

/// Sends one request and waits for its acknowledgement.
pub async fn request(
    h: &Handle,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut resp = h.clone().request(req)?;
    while let Some(m) = resp.next().await {
        if let NetlinkPayload::Error(e) = m.payload
            && e.code.is_some()
        {
            return Err(rtnetlink::Error::NetlinkError(e));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<InfoKind>,
    pub mtu: u32,
    pub tx_qlen: u32,
    pub mac: Option<Vec<u8>>,
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
            LinkAttribute::Address(b) => l.mac = Some(b),
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
        Err(source) => Err(Error::Netlink { what, source }),
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
    in_netns(netns, || {
        let l = with_rtnl(async |h| by_name(&h, ifname).await)?.ok_or_else(|| {
            Error::NotFound(format!("interface {ifname} not found in the container"))
        })?;
        match (&l.kind, l.link) {
            (Some(InfoKind::Veth), Some(peer)) if peer > 0 => Ok(peer),
            _ => Err(Error::NotFound(format!(
                "container interface {ifname} has no veth peer"
            ))),
        }
    })
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
                    source,
                })?;
        }
        Err(source) => {
            return Err(Error::Netlink {
                what: format!("failed to create ifb device {name}"),
                source,
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
            source,
        }),
    }
}
