//! The sockets: UDP and TCP on each listen address, bound before the server says it is ready
//! (so that a port taken by someone else is the plugin's clear error, not a silent server).
//!
//! ```text
//!  bind_all (sync, before "ready")      serve (tokio)
//!  ───────────────────────────────      ─────────────────────────────────────────────
//!  UDP <gw>:53  (freebind) ───────────► 2 blocking threads: recv → decode → respond → send
//!                                          └ Forward → tokio task (forward_udp) → send
//!  TCP <gw>:53  (freebind, reuseaddr) ─► accept loop → task per connection:
//!                                          length-prefixed queries, answered in order
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::State;
use crate::answer::{Decision, respond};
use crate::upstream;

/// Bound but not yet served sockets.
pub struct Bound {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: Vec<std::net::TcpListener>,
}

/// Binds UDP and TCP on every address. Freebind, so that an IPv6 gateway still in DAD (or an
/// address the bridge gets a moment later) does not fail the bind; no SO_REUSEPORT, so that a
/// port someone else holds is an error.
pub fn bind_all(addrs: &[IpAddr], port: u16) -> Result<Bound, String> {
    let mut b = Bound {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for ip in addrs {
        let sa = SocketAddr::new(*ip, port);
        let udp = socket(sa, Type::DGRAM, Protocol::UDP)
            .and_then(|s| s.bind(&sa.into()).map(|_| s))
            .map_err(|e| format!("listen on {sa}/udp: {e}"))?;
        udp.set_nonblocking(true).map_err(|e| e.to_string())?;
        b.udp.push(udp.into());
        let tcp = socket(sa, Type::STREAM, Protocol::TCP)
            .and_then(|s| {
                s.set_reuse_address(true)?;
                s.bind(&sa.into())?;
                s.listen(1024)?;
                Ok(s)
            })
            .map_err(|e| format!("listen on {sa}/tcp: {e}"))?;
        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
        b.tcp.push(tcp.into());
    }
    Ok(b)
}

fn socket(sa: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(sa), ty, Some(proto))?;
    if sa.is_ipv4() {
        s.set_freebind_v4(true)?;
    } else {
        s.set_only_v6(true)?;
        s.set_freebind_v6(true)?;
    }
    Ok(s)
}

/// Serves the bound sockets until the process ends. UDP is served by blocking OS threads (two
/// per socket, the kernel wakes one per datagram): a local answer is a recv, a lookup and a send,
/// with no reactor round trip, which is what makes hits as fast as dnsmasq's. Forwarded queries
/// go to tokio tasks, so a slow upstream never holds a receiver.
pub fn serve(bound: Bound, state: Arc<State>) -> Result<(), String> {
    let rt = tokio::runtime::Handle::current();
    for s in bound.udp {
        s.set_nonblocking(false).map_err(|e| e.to_string())?;
        let sock = Arc::new(s);
        for i in 0..UDP_THREADS {
            let (sock, state, rt) = (sock.clone(), state.clone(), rt.clone());
            std::thread::Builder::new()
                .name(format!("udp-{i}"))
                .spawn(move || udp_loop(&sock, &state, &rt))
                .map_err(|e| format!("udp thread: {e}"))?;
        }
    }
    for l in bound.tcp {
        let l = TcpListener::from_std(l).map_err(|e| e.to_string())?;
        tokio::spawn(tcp_accept(l, state.clone()));
    }
    Ok(())
}

/// Receivers per UDP socket.
const UDP_THREADS: usize = 2;

fn udp_loop(sock: &Arc<std::net::UdpSocket>, state: &Arc<State>, rt: &tokio::runtime::Handle) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("udp recv: {e}");
                continue;
            }
        };
        let query = &buf[..n];
        match handle(state, query) {
            Handled::Reply(bytes) => {
                let _ = sock.send_to(&bytes, peer);
            }
            Handled::Drop => {}
            Handled::Forward(req) => {
                let (sock, state, query) = (sock.clone(), state.clone(), query.to_vec());
                rt.spawn(async move {
                    let ups = state.current().upstreams.clone();
                    let resp = match upstream::forward_udp(&ups, &query).await {
                        Some(r) => r,
                        None => servfail(&req),
                    };
                    // A UDP send does not block for long: no need to leave the task for it.
                    let _ = sock.send_to(&resp, peer);
                });
            }
        }
    }
}

/// The largest UDP answer without EDNS (RFC 1035); above it the answer is sent truncated.
const UDP_MAX: usize = 512;

enum Handled {
    Reply(Vec<u8>),
    Forward(Box<Message>),
    Drop,
}

fn handle(state: &State, query: &[u8]) -> Handled {
    let req = match Message::from_vec(query) {
        Ok(m) => m,
        // Not even a header: nothing to answer to.
        Err(_) if query.len() < 12 => return Handled::Drop,
        Err(_) => {
            let id = u16::from_be_bytes([query[0], query[1]]);
            let m = Message::error_msg(id, hickory_proto::op::OpCode::Query, ResponseCode::FormErr);
            return m.to_vec().map(Handled::Reply).unwrap_or(Handled::Drop);
        }
    };
    let loaded = state.current();
    match respond(&loaded.table, &req) {
        Decision::Answer(m) => {
            let max = req
                .edns
                .as_ref()
                .map(|e| e.max_payload().clamp(512, crate::answer::EDNS_PAYLOAD) as usize)
                .unwrap_or(UDP_MAX);
            match m.to_vec() {
                Ok(b) if b.len() <= max => Handled::Reply(b),
                Ok(_) => m
                    .truncate()
                    .to_vec()
                    .map(Handled::Reply)
                    .unwrap_or(Handled::Drop),
                Err(_) => Handled::Drop,
            }
        }
        Decision::Forward => Handled::Forward(Box::new(req)),
    }
}

fn servfail(req: &Message) -> Vec<u8> {
    let mut m = Message::error_msg(
        req.metadata.id,
        req.metadata.op_code,
        ResponseCode::ServFail,
    );
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.queries = req.queries.clone();
    m.to_vec().unwrap_or_default()
}

async fn tcp_accept(l: TcpListener, state: Arc<State>) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                tokio::spawn(tcp_conn(s, state.clone()));
            }
            Err(e) => tracing::warn!("tcp accept: {e}"),
        }
    }
}

async fn tcp_conn(mut s: TcpStream, state: Arc<State>) {
    loop {
        let mut len = [0u8; 2];
        // An idle client is dropped after the forward timeout's worth of silence, times five.
        let read = tokio::time::timeout(upstream::TIMEOUT * 5, s.read_exact(&mut len)).await;
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut q).await.is_err() {
            return;
        }
        let resp = match handle_tcp(&state, &q) {
            Some(Ok(b)) => b,
            Some(Err(req)) => {
                let ups = state.current().upstreams.clone();
                upstream::forward_tcp(&ups, &q)
                    .await
                    .unwrap_or_else(|| servfail(&req))
            }
            None => return,
        };
        let Ok(n) = u16::try_from(resp.len()) else {
            return;
        };
        if s.write_all(&n.to_be_bytes()).await.is_err() || s.write_all(&resp).await.is_err() {
            return;
        }
    }
}

/// TCP has no size limit to apply: a local answer whole, or the request to forward.
fn handle_tcp(state: &State, q: &[u8]) -> Option<Result<Vec<u8>, Box<Message>>> {
    let req = Message::from_vec(q).ok()?;
    match respond(&state.current().table, &req) {
        Decision::Answer(m) => m.to_vec().ok().map(Ok),
        Decision::Forward => Some(Err(Box::new(req))),
    }
}
