//! The link attributes tuning reads and writes, over raw rtnetlink (a [`tether_netlink::Rtnl`]
//! opened inside the container's namespace): the facade does not model allmulti or txqueuelen.

use crate::Error;
use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};
use tether_netlink::{format_mac, rtnl_errno};

/// The attributes tuning reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub promisc: bool,
    pub allmulti: bool,
    pub tx_qlen: u32,
}

fn state_of(m: &LinkMessage) -> LinkState {
    let mut s = LinkState {
        index: m.header.index,
        mac: None,
        mtu: 0,
        promisc: m.header.flags.contains(LinkFlags::Promisc),
        allmulti: m.header.flags.contains(LinkFlags::Allmulti),
        tx_qlen: 0,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::Address(b) => s.mac = b.as_slice().try_into().ok(),
            LinkAttribute::Mtu(v) => s.mtu = *v,
            LinkAttribute::TxQueueLen(v) => s.tx_qlen = *v,
            _ => {}
        }
    }
    s
}

/// The link called `name`, or `None` when there is none.
pub async fn get(h: &Handle, name: &str) -> Result<Option<LinkState>, Error> {
    let res = h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await;
    match res {
        Ok(m) => Ok(m.as_ref().map(state_of)),
        Err(e) if rtnl_errno(&e) == Some(nix::errno::Errno::ENODEV as i32) => Ok(None),
        Err(source) => Err(Error::Netlink {
            what: format!("failed to look up link {name}"),
            source: source.into(),
        }),
    }
}

/// The changes one call makes; `None` leaves an attribute alone.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub promisc: Option<bool>,
    pub allmulti: Option<bool>,
    pub tx_qlen: Option<u32>,
}

/// Applies `c` to the link `name` (index `index`), one attribute per request so that an error
/// names the attribute the kernel refused. Order as in the reference: MAC, promisc, MTU, allmulti,
/// then txqlen.
pub async fn apply(h: &Handle, index: u32, name: &str, c: &Change) -> Result<(), Error> {
    let set = async |msg: LinkMessage, what: String| {
        h.link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| Error::Netlink {
                what,
                source: source.into(),
            })
    };
    if let Some(mac) = c.mac {
        set(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
            format!("failed to set MAC {} on {name}", format_mac(mac)),
        )
        .await?;
    }
    if let Some(on) = c.promisc {
        set(
            LinkUnspec::new_with_index(index).promiscuous(on).build(),
            format!("failed to set promisc {on} on {name}"),
        )
        .await?;
    }
    if let Some(mtu) = c.mtu {
        set(
            LinkUnspec::new_with_index(index).mtu(mtu).build(),
            format!("failed to set MTU {mtu} on {name}"),
        )
        .await?;
    }
    if let Some(on) = c.allmulti {
        set(
            LinkUnspec::new_with_index(index).allmulticast(on).build(),
            format!("failed to set allmulti {on} on {name}"),
        )
        .await?;
    }
    if let Some(q) = c.tx_qlen {
        set(
            LinkUnspec::new_with_index(index).txqueuelen(q).build(),
            format!("failed to set txqueuelen {q} on {name}"),
        )
        .await?;
    }
    Ok(())
}
