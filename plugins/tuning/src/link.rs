//! Namespace entry and the few rtnetlink calls tuning needs.
//!
//! Namespace switching is per OS thread, so [`in_netns`] runs its closure on a fresh scoped thread
//! that joins the namespace and dies afterwards: the plugin's main thread never changes namespace.
//! The netlink socket is opened on that thread, so it talks to that namespace's kernel tables;
//! `/proc/sys/net` opened from that thread is the namespace's too.

use crate::Error;
use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use nix::sched::{CloneFlags, setns};
use rtnetlink::{Handle, LinkUnspec};
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
        // A panic keeps its message: the skel turns it into a CNI error.
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Runs `f` with an rtnetlink handle for the calling thread's namespace, on a current-thread
/// runtime that lives only for this call.
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

/// The positive errno of a netlink error, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// The attributes tuning reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub mac: Option<Vec<u8>>,
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
            LinkAttribute::Address(b) => s.mac = Some(b.clone()),
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
        Err(e) if errno(&e) == Some(nix::errno::Errno::ENODEV as i32) => Ok(None),
        Err(source) => Err(Error::Netlink {
            what: format!("failed to look up link {name}"),
            source,
        }),
    }
}

/// The changes one call makes; `None` leaves an attribute alone.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub mac: Option<Vec<u8>>,
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
            .map_err(|source| Error::Netlink { what, source })
    };
    if let Some(mac) = &c.mac {
        set(
            LinkUnspec::new_with_index(index)
                .address(mac.clone())
                .build(),
            format!(
                "failed to set MAC {} on {name}",
                crate::config::format_mac(mac)
            ),
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
