//! Raw rtnetlink, for requests the [`crate::NsHandle`] facade does not model (tc qdiscs and
//! filters, link attributes it does not read or set).
//!
//! [`Rtnl`] is a separate connection with rtnetlink's own defaults: `NsHandle`'s connection
//! forwards NLMSG_DONE to its dumps, which rtnetlink's request builders would take for an
//! unexpected message.

use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, RawFd};

use futures::StreamExt;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{Socket, TokioSocket, protocols::NETLINK_ROUTE};
use tokio::runtime::Runtime;

use crate::error::{Result, from_io};
use crate::ns::run_in;

/// An rtnetlink connection that acts in one network namespace, driven by a current-thread
/// runtime that runs only inside [`Rtnl::block_on`].
///
/// Like [`crate::NsHandle`], the socket stays bound to the namespace it was created in, whichever
/// thread uses it later.
pub struct Rtnl {
    handle: rtnetlink::Handle,
    rt: Runtime,
    /// The socket, owned by the connection that `rt` drives; open as long as `self` lives.
    fd: RawFd,
}

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtnl").finish_non_exhaustive()
    }
}

impl Rtnl {
    /// A connection for the calling thread's network namespace.
    pub fn current() -> Result<Rtnl> {
        Rtnl::open(None, false)
    }

    /// A connection for the namespace behind `ns` (see [`crate::open_netns`]); the calling
    /// thread's namespace never changes.
    pub fn for_netns(ns: BorrowedFd<'_>) -> Result<Rtnl> {
        Rtnl::open(Some(ns), false)
    }

    /// A connection in the namespace behind `ns` (the calling thread's for `None`), driven by a
    /// fresh current-thread runtime. `forward_done` hands NLMSG_DONE to the requests too.
    pub(crate) fn open(ns: Option<BorrowedFd<'_>>, forward_done: bool) -> Result<Rtnl> {
        let sock = run_in(ns, || {
            Socket::new(NETLINK_ROUTE).map_err(|e| from_io("open", "netlink socket", e))
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| from_io("start", "netlink runtime", e))?;
        let ((mut conn, handle, _), fd) = {
            // Registering the socket with the reactor needs the runtime's context.
            let _guard = rt.enter();
            let fd = sock.into_raw_fd();
            // SAFETY: the fd comes from `into_raw_fd`, so TokioSocket becomes its only owner.
            let sock = unsafe { TokioSocket::from_raw_fd(fd) };
            (rtnetlink::from_socket(sock), fd)
        };
        conn.set_forward_done(forward_done);
        // The connection makes progress only while something blocks on the runtime.
        rt.spawn(conn);
        Ok(Rtnl { handle, rt, fd })
    }

    /// Turns the kernel's strict checking of requests (`NETLINK_GET_STRICT_CHK`, Linux 4.20+) on
    /// or off. With it on, dumps honour the filters in their header (an address dump of one
    /// link reads that link only instead of every address of the namespace), and requests the
    /// kernel would otherwise half-ignore are refused.
    pub(crate) fn set_strict(&self, on: bool) -> std::io::Result<()> {
        let value: libc::c_int = on.into();
        // SAFETY: `self.fd` is our open netlink socket (see the field); the option value is a
        // c_int that lives across the call.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_NETLINK,
                libc::NETLINK_GET_STRICT_CHK,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Runs `f` with the rtnetlink handle to completion and returns its output. Never call it
    /// from inside an async context (it blocks the thread).
    pub fn block_on<T>(&self, f: impl AsyncFnOnce(rtnetlink::Handle) -> T) -> T {
        self.rt.block_on(f(self.handle.clone()))
    }
}

/// Sends a hand-built request (add, change, delete) with `NLM_F_REQUEST | NLM_F_ACK | flags` and
/// waits for its acknowledgement; a kernel NACK is `rtnetlink::Error::NetlinkError`.
pub async fn rtnl_ack(
    handle: &rtnetlink::Handle,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> std::result::Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut replies = handle.clone().request(req)?;
    while let Some(reply) = replies.next().await {
        if let NetlinkPayload::Error(e) = reply.payload
            && e.code.is_some()
        {
            return Err(rtnetlink::Error::NetlinkError(e));
        }
    }
    Ok(())
}

/// The (positive) errno of a kernel NACK; `None` for any other rtnetlink failure.
pub fn rtnl_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() != 0 => Some(-m.raw_code()),
        _ => None,
    }
}
