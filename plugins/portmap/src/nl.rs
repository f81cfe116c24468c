//! Netlink for portmap's two kernel questions, on the workspace's crates: `netlink-sys` for the
//! socket, `netlink-packet-core` for framing and attributes, `netlink-packet-route` for the
//! route message (encoded and parsed alone: `RouteNetlinkMessage` would link the parsers of every
//! rtnetlink message kind into the binary). Synchronous on purpose: the plugin runs once per
//! container, and an async runtime would cost start-up time for one request and one dump.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    DecodeError, Emitable, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable, NlaBuffer, NlasIterator, Parseable,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_sys::{Socket as NlSocket, SocketAddr};

pub use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP};
pub use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::protocols::NETLINK_ROUTE;

/// Room for one datagram of replies; the kernel never sends a bigger one for our requests.
const RECV_BUF: usize = 64 * 1024;

/// A message whose payload the caller encodes and decodes itself (ctnetlink has no crate in
/// the workspace): its type and the bytes after the netlink header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    pub ty: u16,
    pub body: Vec<u8>,
}

impl Raw {
    /// A message of type `ty` whose body starts with the fixed `family_header`.
    pub fn new(ty: u16, family_header: &[u8]) -> Raw {
        let mut body = family_header.to_vec();
        body.resize(align(body.len()), 0);
        Raw { ty, body }
    }

    /// Appends an attribute exactly as it was received (header included), e.g. a tuple from a
    /// dump that identifies the entry to delete.
    pub fn raw_attr(&mut self, raw: &[u8]) -> &mut Raw {
        self.body.extend_from_slice(raw);
        self.body.resize(align(self.body.len()), 0);
        self
    }
}

impl NetlinkSerializable for Raw {
    fn message_type(&self) -> u16 {
        self.ty
    }

    fn buffer_len(&self) -> usize {
        self.body.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.body);
    }
}

impl NetlinkDeserializable for Raw {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Raw, DecodeError> {
        Ok(Raw {
            ty: header.message_type,
            body: payload.to_vec(),
        })
    }
}

/// A netlink socket of one protocol, bound in the current network namespace.
pub struct Socket {
    sock: NlSocket,
    seq: u32,
}

impl Socket {
    pub fn open(protocol: isize) -> io::Result<Socket> {
        let mut sock = NlSocket::new(protocol)?;
        sock.bind_auto()?;
        Ok(Socket { sock, seq: 1 })
    }

    /// Sends one request and collects the payloads of every reply message until the kernel says
    /// it is done: the ack (an error message with code 0), `NLMSG_DONE` for dumps, or, for a
    /// plain request, the single answer. A negative ack becomes the `io::Error` of its errno.
    pub fn request<T>(&mut self, payload: T, flags: u16) -> io::Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable,
    {
        let seq = self.seq;
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.sock.send_to(&buf, &SocketAddr::new(0, 0), 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let ack = flags & NLM_F_ACK != 0;
        let mut replies = Vec::new();
        let mut rbuf: Vec<u8> = Vec::with_capacity(RECV_BUF);
        loop {
            rbuf.clear();
            match self.sock.recv(&mut rbuf, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let mut data = &rbuf[..];
            while !data.is_empty() {
                let msg = NetlinkMessage::<T>::deserialize(data)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                data = &data[align(len).min(data.len())..];
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                            None => Ok(replies),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        replies.push(m);
                        if !dump && !ack {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One attribute of a received message.
#[derive(Clone, Copy)]
pub struct Attr<'a> {
    pub ty: u16,
    pub value: &'a [u8],
    /// The whole attribute, header included, for replaying it.
    pub raw: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn nested(&self) -> Attrs<'a> {
        Attrs::new(self.value)
    }

    pub fn u16_be(&self) -> Option<u16> {
        Some(u16::from_be_bytes(self.value.get(0..2)?.try_into().ok()?))
    }

    pub fn u8(&self) -> Option<u8> {
        self.value.first().copied()
    }
}

/// The attributes of a run of bytes; malformed trailing bytes end the iteration.
pub struct Attrs<'a>(NlasIterator<&'a [u8]>);

impl<'a> Attrs<'a> {
    pub fn new(bytes: &'a [u8]) -> Attrs<'a> {
        Attrs(NlasIterator::new(bytes))
    }

    pub fn find(mut self, ty: u16) -> Option<Attr<'a>> {
        self.by_ref().find(|a| a.ty == ty)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        let nla: NlaBuffer<&'a [u8]> = self.0.next()?.ok()?;
        let ty = nla.kind();
        let len = usize::from(nla.length());
        let raw: &'a [u8] = &nla.into_inner()[..len];
        Some(Attr {
            ty,
            // The value is what follows the 4-byte attribute header.
            value: &raw[4..],
            raw,
        })
    }
}

/// The interface the kernel would route `ip` out of (`ip route get`), by name.
pub fn route_oif(ip: IpAddr) -> io::Result<String> {
    let mut msg = RouteMessage::default();
    msg.header = RouteHeader {
        address_family: match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        },
        destination_prefix_length: if ip.is_ipv4() { 32 } else { 128 },
        protocol: RouteProtocol::Unspec,
        scope: RouteScope::Universe,
        kind: RouteType::Unspec,
        ..RouteHeader::default()
    };
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(ip)));
    let mut body = vec![0; msg.buffer_len()];
    msg.emit(&mut body);
    let mut sock = Socket::open(NETLINK_ROUTE)?;
    let replies = sock.request(
        Raw {
            ty: libc::RTM_GETROUTE,
            body,
        },
        0,
    )?;
    let oif = replies
        .iter()
        .filter(|r| r.ty == libc::RTM_NEWROUTE)
        .filter_map(|r| RouteMessage::parse(&r.body[..]).ok())
        .find_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no route to {ip}")))?;
    let name = nix::net::if_::if_indextoname(oif).map_err(io::Error::from)?;
    Ok(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        // Two attributes as the kernel lays them out: length, type, value, padding to 4.
        let mut bytes = Vec::new();
        for (ty, value) in [
            (3u16, vec![1u8, 2, 3]),
            (4 | 0x8000, 7u32.to_ne_bytes().to_vec()),
        ] {
            bytes.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
            bytes.extend_from_slice(&ty.to_ne_bytes());
            bytes.extend_from_slice(&value);
            bytes.resize(align(bytes.len()), 0);
        }
        let attrs: Vec<_> = Attrs::new(&bytes).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].value, &[1, 2, 3]);
        assert_eq!(attrs[0].raw.len(), 7);
        assert_eq!(attrs[1].ty, 4, "the nested flag is not part of the type");
        assert_eq!(attrs[1].value, 7u32.to_ne_bytes());
        assert_eq!(attrs[1].raw, &bytes[8..16]);
    }

    #[test]
    fn route_lookup_for_loopback() {
        // In a namespace of its own, whose `lo` is up: the runner's may have it down (a bare
        // `unshare -rn`), and then there is no route to 127.0.0.1 at all.
        let ns = netns_fixtures::Netns::new().expect("a throwaway network namespace");
        let oif = ns.run(|| route_oif("127.0.0.1".parse().unwrap()));
        assert_eq!(oif.unwrap(), "lo");
    }

    #[test]
    fn no_route_is_an_error() {
        // A fresh namespace has only `lo`'s local routes: nothing routes 192.0.2.50.
        let ns = netns_fixtures::Netns::new().expect("a throwaway network namespace");
        let e = ns
            .run(|| route_oif("192.0.2.50".parse().unwrap()))
            .unwrap_err();
        assert!(
            e.raw_os_error() == Some(libc::ENETUNREACH) || e.kind() == io::ErrorKind::NotFound,
            "{e}"
        );
    }
}
