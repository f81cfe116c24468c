//! Deleting stale conntrack entries through ctnetlink (no `conntrack` binary needed).
//!
//! Why: a UDP (or SCTP) client that keeps sending to a published host port keeps its conntrack
//! entry alive, and with it the old DNAT decision. After the container behind the port is replaced,
//! its packets would still go to the dead address until the client pauses for the entry's timeout.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::nl::{Attr, Attrs, NETLINK_NETFILTER, NLM_F_ACK, NLM_F_DUMP, Raw, Socket};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;

pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// One direction of a connection, as far as we need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub dst_port: Option<u16>,
}

/// A conntrack entry: the original direction, and the reply direction (whose source is where a
/// DNAT sent the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
}

fn addr(a: Attr<'_>) -> Option<IpAddr> {
    match a.value.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(a.value).ok()?,
        ))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(a.value).ok()?,
        ))),
        _ => None,
    }
}

fn parse_tuple(attr: Attr<'_>) -> Option<Tuple> {
    let ip = attr.nested().find(CTA_TUPLE_IP)?;
    let (src, dst) = {
        let mut src = None;
        let mut dst = None;
        for a in ip.nested() {
            match a.ty {
                CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = addr(a),
                CTA_IP_V4_DST | CTA_IP_V6_DST => dst = addr(a),
                _ => {}
            }
        }
        (src?, dst?)
    };
    let proto = attr.nested().find(CTA_TUPLE_PROTO)?;
    Some(Tuple {
        src,
        dst,
        proto: proto.nested().find(CTA_PROTO_NUM)?.u8()?,
        dst_port: proto
            .nested()
            .find(CTA_PROTO_DST_PORT)
            .and_then(|p| p.u16_be()),
    })
}

/// Deletes every entry (IPv4 and IPv6) for which `stale` is true, and returns how many went.
/// Entries that vanish between the dump and the delete are not an error.
///
/// One dump covers both families: the kernel walks the whole conntrack hash table (shared by all
/// namespaces) for every dump, which costs milliseconds on a busy machine whatever our namespace
/// holds.
pub fn delete_where(stale: impl Fn(&Entry) -> bool) -> io::Result<usize> {
    let mut sock = Socket::open(NETLINK_NETFILTER)?;
    let ty = |msg: u16| (NFNL_SUBSYS_CTNETLINK << 8) | msg;
    // struct nfgenmsg: family (AF_UNSPEC: all), version (NFNETLINK_V0), res_id (be16).
    let dump = sock.request(
        Raw::new(ty(IPCTNL_MSG_CT_GET), &[libc::AF_UNSPEC as u8, 0, 0, 0]),
        NLM_F_DUMP,
    )?;
    let mut deleted = 0;
    for reply in &dump {
        let Some(attrs) = reply.body.get(4..) else {
            continue;
        };
        let Some(orig_attr) = Attrs::new(attrs).find(CTA_TUPLE_ORIG) else {
            continue;
        };
        let entry = match (
            parse_tuple(orig_attr),
            Attrs::new(attrs)
                .find(CTA_TUPLE_REPLY)
                .and_then(parse_tuple),
        ) {
            (Some(orig), Some(reply)) => Entry { orig, reply },
            _ => continue,
        };
        if !stale(&entry) {
            continue;
        }
        // The original tuple (plus the zone, if any) names the entry exactly; the message's
        // family says how to read the tuple's addresses.
        let family = if entry.orig.src.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let mut del = Raw::new(ty(IPCTNL_MSG_CT_DELETE), &[family as u8, 0, 0, 0]);
        del.raw_attr(orig_attr.raw);
        if let Some(zone) = Attrs::new(attrs).find(CTA_ZONE) {
            del.raw_attr(zone.raw);
        }
        match sock.request(del, NLM_F_ACK) {
            Ok(_) => deleted += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}
