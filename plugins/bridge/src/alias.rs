//! `IFLA_IFALIAS` on host links: the record GC reads to know which attachment a host veth belongs
//! to (its name is a hash, so it cannot be read back).
//!
//! tether-netlink does not expose the alias yet, so this is a minimal synchronous rtnetlink
//! exchange of our own, in the calling thread's (the host's) namespace. It should move into
//! tether-netlink (`Link::alias`, `set_alias`) and this file go away.

use std::io;

use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A host link as far as attachment records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasedLink {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub alias: Option<String>,
}

fn parse(m: LinkMessage) -> AliasedLink {
    let mut l = AliasedLink {
        index: m.header.index,
        name: String::new(),
        kind: None,
        alias: None,
    };
    for attr in m.attributes {
        match attr {
            LinkAttribute::IfName(n) => l.name = n,
            LinkAttribute::IfAlias(a) if !a.is_empty() => l.alias = Some(a),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    l
}

/// Sends one request and collects the link messages of the reply until its ACK or DONE.
fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<AliasedLink>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    packet.header.flags = NLM_F_REQUEST | flags;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;

    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let reply: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&rx[offset..size])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    out.push(parse(l));
                    // A plain GET answers with exactly one message and no DONE.
                    if flags & NLM_F_DUMP == 0 {
                        return Ok(out);
                    }
                }
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        None => Ok(out),
                    };
                }
                NetlinkPayload::Done(_) => return Ok(out),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// Sets the alias of link `index` in the calling thread's namespace.
pub fn set_alias(index: u32, alias: &str) -> io::Result<()> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
    request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK).map(drop)
}

/// The link called `name`, if any.
pub fn link_by_name(name: &str) -> io::Result<Option<AliasedLink>> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    match request(RouteNetlinkMessage::GetLink(m), 0) {
        Ok(mut v) => Ok(v.pop()),
        Err(e) if e.raw_os_error() == Some(libc_enodev()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every link of the calling thread's namespace.
pub fn links() -> io::Result<Vec<AliasedLink>> {
    request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_DUMP,
    )
}

fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}
