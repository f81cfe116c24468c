//! The nf_tables socket: opened in a given network namespace, it sends one [`Batch`] per call
//! and turns the kernel's answers into one [`Result`].

use std::io;
use std::os::fd::BorrowedFd;

use netlink_sys::{Socket, SocketAddr};
use nix::sched::{CloneFlags, setns};

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::wire;

/// A netlink socket bound to the nf_tables of one network namespace. Like `tether-netlink`'s
/// handles, a socket keeps the namespace it was created in, whichever thread uses it later.
#[derive(Debug)]
pub struct Nft {
    sock: Socket,
    seq: u32,
}

impl Nft {
    /// A socket for the calling thread's network namespace.
    pub fn current() -> Result<Nft> {
        let mut sock = Socket::new(wire::NETLINK_NETFILTER).map_err(|e| {
            // No nfnetlink in this kernel at all.
            match e.raw_os_error() {
                Some(libc::EPROTONOSUPPORT) => Error::Unavailable {
                    op: "open the nfnetlink socket".into(),
                    source: e,
                },
                _ => Error::Socket(e),
            }
        })?;
        sock.bind_auto().map_err(Error::Socket)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(Error::Socket)?;
        // ACKs carry only the failing message's header, not the whole (maybe large) message.
        sock.set_cap_ack(true).map_err(Error::Socket)?;
        // Seed the sequence from the clock so answers to an earlier process are not ours.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        Ok(Nft { sock, seq })
    }

    /// A socket for the network namespace behind `ns`. It is created on a short-lived thread
    /// that entered the namespace; the calling thread's namespace never changes.
    pub fn for_netns(ns: BorrowedFd<'_>) -> Result<Nft> {
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(ns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::Socket(io::Error::from_raw_os_error(e as i32)))?;
                Nft::current()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    pub(crate) fn socket(&mut self) -> &mut Socket {
        &mut self.sock
    }

    /// Sends `batch` as one transaction: every object in it is applied, or none is. The first
    /// failing object's error is returned (an empty batch sends nothing).
    pub fn apply(&mut self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let base = self.seq;
        self.seq = self.seq.wrapping_add(batch.len() as u32 + 2);
        let mut buf = Vec::new();
        let frame = |ty| wire::message(ty, wire::NLM_F_REQUEST, 0, wire::NFNL_SUBSYS_NFTABLES, &[]);
        let mut begin = frame(wire::NFNL_MSG_BATCH_BEGIN);
        wire::set_seq(&mut begin, base);
        buf.extend(begin);
        for (i, (_, m)) in batch.msgs.iter().enumerate() {
            let mut m = m.clone();
            wire::set_seq(&mut m, base.wrapping_add(1 + i as u32));
            buf.extend(m);
        }
        let mut end = frame(wire::NFNL_MSG_BATCH_END);
        wire::set_seq(&mut end, base.wrapping_add(1 + batch.len() as u32));
        buf.extend(end);

        let sent = self.sock.send(&buf, 0).map_err(Error::Socket)?;
        if sent != buf.len() {
            return Err(Error::Socket(io::Error::other("short send of the batch")));
        }
        self.read_answers(batch, base)
    }

    /// Reads every answer to the batch. nfnetlink processes a batch inside `sendmsg`, so all
    /// answers are queued by now: read until the socket is empty, then report the first error.
    fn read_answers(&mut self, batch: &Batch, base: u32) -> Result<()> {
        let mut first: Option<(u32, i32)> = None;
        let mut acked = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while acked < batch.len() && first.is_none() {
            let n = match self.sock.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Socket(e)),
            };
            for (ty, seq, errno) in parse_answers(&buf[..n]) {
                if ty != wire::NLMSG_ERROR || seq.wrapping_sub(base) > batch.len() as u32 + 1 {
                    continue;
                }
                if errno == 0 {
                    acked += 1;
                } else if first.is_none_or(|(s, _)| seq.wrapping_sub(base) < s.wrapping_sub(base)) {
                    first = Some((seq, errno));
                }
            }
        }
        // Drain what is left (the ACKs of a failed batch), so the next call starts clean.
        while first.is_some()
            && self
                .sock
                .recv(&mut &mut buf[..], libc::MSG_DONTWAIT)
                .is_ok()
        {}
        match first {
            None if acked == batch.len() => Ok(()),
            None => Err(Error::Socket(io::Error::other(format!(
                "the kernel acknowledged {acked} of {} messages",
                batch.len()
            )))),
            Some((seq, errno)) => {
                let i = seq.wrapping_sub(base) as usize;
                let op = match i {
                    0 => "begin the batch".to_string(),
                    i if i <= batch.len() => batch.msgs[i - 1].0.clone(),
                    _ => "commit the batch".to_string(),
                };
                Err(Error::from_errno(op, errno))
            }
        }
    }
}

/// `(type, seq, -error)` of each netlink message in `buf`; `error` is only read for
/// `NLMSG_ERROR` (0 there is an ACK).
fn parse_answers(mut buf: &[u8]) -> Vec<(u16, u32, i32)> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        let ty = u16::from_ne_bytes(buf[4..6].try_into().expect("2 bytes"));
        if len < 16 || len > buf.len() {
            break;
        }
        let mut errno = 0;
        let mut seq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
        if ty == wire::NLMSG_ERROR && len >= 20 + 16 {
            errno = -i32::from_ne_bytes(buf[16..20].try_into().expect("4 bytes"));
            // The request's own header follows: its seq is the one the answer is for.
            seq = u32::from_ne_bytes(buf[28..32].try_into().expect("4 bytes"));
        }
        if ty != wire::NLMSG_DONE {
            out.push((ty, seq, errno));
        }
        buf = &buf[(len + 3) & !3..];
    }
    out
}
