//! A minimal netlink client: just enough for one route lookup (rtnetlink) and the conntrack dump
//! and deletes (ctnetlink). Hand-rolled on `libc` so the plugin binary, which runs once per
//! container, stays small and starts fast (no async runtime).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
/// Attribute type bits that are flags (nested, network byte order), not part of the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

const HDR_LEN: usize = 16;

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// A netlink socket of one protocol, bound in the current network namespace.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub fn open(protocol: libc::c_int) -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a valid sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd, seq: 1 })
    }

    /// Sends one request and collects the payloads of every reply message until the kernel says
    /// it is done: the ack (`NLMSG_ERROR` with 0), `NLMSG_DONE` for dumps, or, for a plain
    /// request, the single answer. A negative ack becomes the `io::Error` of its errno.
    pub fn request(&mut self, msg: Message) -> io::Result<Vec<Reply>> {
        let seq = self.seq;
        self.seq += 1;
        let flags = msg.flags;
        let buf = msg.finish(seq);
        // SAFETY: buf is a valid buffer of buf.len() bytes; the kernel is the default peer.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let ack = flags & NLM_F_ACK != 0;
        let mut replies = Vec::new();
        let mut rbuf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: rbuf is a valid writable buffer of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), rbuf.as_mut_ptr().cast(), rbuf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut data = &rbuf[..n as usize];
            while data.len() >= HDR_LEN {
                let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(data[4..6].try_into().unwrap());
                let rseq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
                if len < HDR_LEN || len > data.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let payload = &data[HDR_LEN..len];
                data = &data[align(len).min(data.len())..];
                if rseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_DONE => return Ok(replies),
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                            .unwrap_or(-libc::EINVAL);
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(-errno));
                        }
                        return Ok(replies);
                    }
                    _ => {
                        replies.push(Reply {
                            ty,
                            payload: payload.to_vec(),
                        });
                        if !dump && !ack {
                            return Ok(replies);
                        }
                    }
                }
            }
        }
    }
}

/// One reply message: its type and everything after the netlink header.
pub struct Reply {
    pub ty: u16,
    pub payload: Vec<u8>,
}

/// A request under construction: a fixed family header, then attributes.
pub struct Message {
    ty: u16,
    flags: u16,
    body: Vec<u8>,
}

impl Message {
    pub fn new(ty: u16, flags: u16, family_header: &[u8]) -> Message {
        let mut body = family_header.to_vec();
        body.resize(align(body.len()), 0);
        Message { ty, flags, body }
    }

    pub fn attr(&mut self, ty: u16, value: &[u8]) -> &mut Message {
        let len = 4 + value.len();
        self.body.extend_from_slice(&(len as u16).to_ne_bytes());
        self.body.extend_from_slice(&ty.to_ne_bytes());
        self.body.extend_from_slice(value);
        self.body.resize(align(self.body.len()), 0);
        self
    }

    /// Appends an attribute exactly as it was received (header included), e.g. a tuple from a
    /// dump that identifies the entry to delete.
    pub fn raw_attr(&mut self, raw: &[u8]) -> &mut Message {
        self.body.extend_from_slice(raw);
        self.body.resize(align(self.body.len()), 0);
        self
    }

    fn finish(self, seq: u32) -> Vec<u8> {
        let len = HDR_LEN + self.body.len();
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&(len as u32).to_ne_bytes());
        buf.extend_from_slice(&self.ty.to_ne_bytes());
        buf.extend_from_slice(&(self.flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&self.body);
        buf
    }
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
        Attrs(self.value)
    }

    pub fn u16_be(&self) -> Option<u16> {
        Some(u16::from_be_bytes(self.value.get(0..2)?.try_into().ok()?))
    }

    pub fn u32_ne(&self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.value.get(0..4)?.try_into().ok()?))
    }

    pub fn u8(&self) -> Option<u8> {
        self.value.first().copied()
    }
}

/// Iterator over a run of attributes. Malformed trailing bytes end the iteration.
pub struct Attrs<'a>(pub &'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        let data = self.0;
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            self.0 = &[];
            return None;
        }
        let attr = Attr {
            ty,
            value: &data[4..len],
            raw: &data[..len],
        };
        self.0 = &data[align(len).min(data.len())..];
        Some(attr)
    }
}

impl<'a> Attrs<'a> {
    pub fn find(mut self, ty: u16) -> Option<Attr<'a>> {
        self.by_ref().find(|a| a.ty == ty)
    }
}

/// The interface the kernel would route `ip` out of (`ip route get`), by name.
pub fn route_oif(ip: std::net::IpAddr) -> io::Result<String> {
    const RTM_NEWROUTE: u16 = 24;
    const RTM_GETROUTE: u16 = 26;
    const RTA_DST: u16 = 1;
    const RTA_OIF: u16 = 4;
    let (family, addr, bits) = match ip {
        std::net::IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec(), 32u8),
        std::net::IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec(), 128u8),
    };
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
    let rtmsg = [family, bits, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut msg = Message::new(RTM_GETROUTE, 0, &rtmsg);
    msg.attr(RTA_DST, &addr);
    let mut sock = Socket::open(libc::NETLINK_ROUTE)?;
    let replies = sock.request(msg)?;
    let oif = replies
        .iter()
        .filter(|r| r.ty == RTM_NEWROUTE && r.payload.len() >= 12)
        .find_map(|r| Attrs(&r.payload[12..]).find(RTA_OIF)?.u32_ne())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no route to {ip}")))?;
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: name has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(oif, name.as_mut_ptr()) };
    if p.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: if_indextoname wrote a NUL-terminated string into name.
    let s = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Ok(s.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let mut m = Message::new(1, 0, &[2, 0, 0, 0]);
        m.attr(3, &[1, 2, 3]).attr(4, &7u32.to_ne_bytes());
        let buf = m.finish(9);
        assert_eq!(buf.len(), 16 + 4 + 8 + 8);
        let attrs: Vec<_> = Attrs(&buf[20..]).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].value, &[1, 2, 3]);
        assert_eq!(attrs[1].u32_ne(), Some(7));
        assert_eq!(attrs[0].raw.len(), 7);
    }

    #[test]
    fn route_lookup_for_loopback() {
        // In a namespace of its own, whose `lo` is up: the runner's may have it down (a bare
        // `unshare -rn`), and then there is no route to 127.0.0.1 at all.
        let ns = netns_fixtures::Netns::new().expect("a throwaway network namespace");
        let oif = ns.run(|| route_oif("127.0.0.1".parse().unwrap()));
        assert_eq!(oif.unwrap(), "lo");
    }
}
