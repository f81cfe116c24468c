//! [`NsHandle`]: a blocking rtnetlink connection bound to one network namespace, and the three
//! request shapes every operation uses (ack, get-one, dump).

use std::fmt::Display;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;

use crate::error::{Error, Result, from_rtnl};
use crate::raw::{Rtnl, rtnl_ack};

/// How often a dump that the kernel flags as inconsistent (`NLM_F_DUMP_INTR`: the table changed
/// while we read it) is restarted before giving up.
const DUMP_RETRIES: usize = 10;

/// A netlink route connection that acts in one network namespace, with a blocking API.
///
/// The socket is bound to the namespace it was created in, so the handle keeps acting there no
/// matter which thread later uses it. Each handle owns a current-thread tokio runtime that drives
/// the rtnetlink connection only while one of its methods runs.
pub struct NsHandle {
    conn: Rtnl,
    restarts: AtomicUsize,
}

impl std::fmt::Debug for NsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsHandle").finish_non_exhaustive()
    }
}

impl NsHandle {
    /// A handle for the calling thread's network namespace.
    pub fn current() -> Result<NsHandle> {
        NsHandle::open(None)
    }

    /// A handle for the namespace behind `ns` (see [`crate::open_netns`]).
    ///
    /// The socket is created on a short-lived thread that entered the namespace; the calling
    /// thread's namespace never changes.
    pub fn for_netns(ns: BorrowedFd<'_>) -> Result<NsHandle> {
        NsHandle::open(Some(ns))
    }

    fn open(ns: Option<BorrowedFd<'_>>) -> Result<NsHandle> {
        // Our dumps read the NLMSG_DONE header too: the kernel may flag an inconsistent dump
        // (NLM_F_DUMP_INTR) only there.
        Ok(NsHandle {
            conn: Rtnl::open(ns, true)?,
            restarts: AtomicUsize::new(0),
        })
    }

    pub(crate) fn conn(&self) -> &Rtnl {
        &self.conn
    }

    /// How many dumps this handle restarted because the kernel flagged them inconsistent
    /// (diagnostics and tests).
    pub fn dump_restarts(&self) -> usize {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Sends a request that expects only an ACK (add, change, delete).
    pub(crate) fn ack(
        &self,
        op: &'static str,
        obj: impl Display,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<()> {
        self.conn
            .block_on(async |handle| rtnl_ack(&handle, msg, flags).await)
            .map_err(|e| from_rtnl(op, obj, e))
    }

    /// Like [`NsHandle::ack`], and returns the messages that came before the ACK (what the
    /// kernel sends back for `NLM_F_ECHO`).
    pub(crate) fn ack_echo(
        &self,
        op: &'static str,
        obj: impl Display,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        self.conn
            .block_on(async |mut handle| {
                let mut replies = handle.request(req)?;
                let mut out = Vec::new();
                while let Some(reply) = replies.next().await {
                    match reply.payload {
                        NetlinkPayload::InnerMessage(m) => out.push(m),
                        NetlinkPayload::Error(e) if e.code.is_some() => {
                            return Err(rtnetlink::Error::NetlinkError(e));
                        }
                        _ => {}
                    }
                }
                Ok(out)
            })
            .map_err(|e| from_rtnl(op, obj, e))
    }

    /// Sends a non-dump GET and returns the one object it names; "no such object" errnos (ENODEV,
    /// ENOENT, ...) become `None`.
    pub(crate) fn get_one(
        &self,
        op: &'static str,
        obj: impl Display,
        msg: RouteNetlinkMessage,
    ) -> Result<Option<RouteNetlinkMessage>> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST;
        let res = self.conn.block_on(async |mut handle| {
            let mut replies = handle.request(req)?;
            let mut found = None;
            while let Some(reply) = replies.next().await {
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => found = Some(m),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(rtnetlink::Error::NetlinkError(e));
                    }
                    _ => {}
                }
            }
            Ok(found)
        });
        match res.map_err(|e| from_rtnl(op, obj, e)) {
            Err(Error::NotFound(_)) => Ok(None),
            other => other,
        }
    }

    /// Dumps a whole table, restarting when the kernel reports that it changed mid-dump.
    pub(crate) fn dump(
        &self,
        op: &'static str,
        obj: impl Display,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_RETRIES {
            let mut req = NetlinkMessage::from(msg.clone());
            req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let res = self.conn.block_on(async |mut handle| {
                let mut replies = handle.request(req)?;
                let mut out = Vec::new();
                let mut interrupted = false;
                while let Some(reply) = replies.next().await {
                    interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                    match reply.payload {
                        NetlinkPayload::InnerMessage(m) => out.push(m),
                        NetlinkPayload::Error(e) if e.code.is_some() => {
                            return Err(rtnetlink::Error::NetlinkError(e));
                        }
                        // A dump that fails half-way reports the errno in NLMSG_DONE.
                        NetlinkPayload::Done(d) if d.code < 0 => {
                            let mut e = rtnetlink::packet_core::ErrorMessage::default();
                            e.code = std::num::NonZeroI32::new(d.code);
                            return Err(rtnetlink::Error::NetlinkError(e));
                        }
                        _ => {}
                    }
                }
                Ok((out, interrupted))
            });
            match res.map_err(|e| from_rtnl(op, &obj, e))? {
                (out, false) => return Ok(out),
                (_, true) => {
                    self.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(op, "dump interrupted (NLM_F_DUMP_INTR), retrying");
                }
            }
        }
        Err(Error::Busy(format!(
            "{op} {obj}: the table kept changing during {DUMP_RETRIES} dumps"
        )))
    }
}
