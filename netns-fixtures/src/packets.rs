//! Real traffic between namespaces: TCP/UDP echo servers that remember who connected, matching
//! clients, and ping.
//!
//! Sockets belong to the namespace they were created in, so only the `socket()`/`bind()` happens
//! on a thread inside the namespace; the serving thread itself is an ordinary thread.

use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Netns;

/// Client-side timeout for connecting, sending and receiving.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the serving thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(10);

/// An echo server listening inside a namespace until dropped.
pub struct EchoServer {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listens on `addr` (port 0 picks one: see [`EchoServer::addr`]) inside `ns`; every TCP
    /// connection gets back what it sent, until it shuts down its write side.
    #[track_caller]
    pub fn tcp(ns: &Netns, addr: SocketAddr) -> EchoServer {
        let listener = ns
            .run(|| TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("EchoServer: bind tcp {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let local = listener.local_addr().expect("listener address");
        EchoServer::start(local, move |stop, peers| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        peers.lock().unwrap().push(peer);
                        std::thread::spawn(move || {
                            let _ = echo_stream(stream);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        })
    }

    /// Same as [`EchoServer::tcp`] for UDP: every datagram is sent back to its sender.
    #[track_caller]
    pub fn udp(ns: &Netns, addr: SocketAddr) -> EchoServer {
        let sock = ns
            .run(|| UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("EchoServer: bind udp {addr}: {e}"));
        sock.set_read_timeout(Some(POLL)).expect("udp timeout");
        let local = sock.local_addr().expect("udp address");
        EchoServer::start(local, move |stop, peers| {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    peers.lock().unwrap().push(peer);
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        })
    }

    fn start(
        addr: SocketAddr,
        serve: impl FnOnce(&AtomicBool, &Mutex<Vec<SocketAddr>>) + Send + 'static,
    ) -> EchoServer {
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peers.clone(), stop.clone());
        let thread = std::thread::spawn(move || serve(&s, &p));
        EchoServer {
            addr,
            peers,
            stop,
            thread: Some(thread),
        }
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The source address of every connection (TCP) or datagram (UDP) so far, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo_stream(mut s: TcpStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut buf = [0u8; 16384];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n])?;
    }
}

/// Connects from inside `ns` to `target`, sends `payload`, and returns what came back.
pub fn tcp_echo(ns: &Netns, target: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    ns.run(|| {
        let mut s = TcpStream::connect_timeout(&target, CLIENT_TIMEOUT)?;
        s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        s.write_all(payload)?;
        s.shutdown(Shutdown::Write)?;
        let mut back = Vec::new();
        s.read_to_end(&mut back)?;
        Ok(back)
    })
}

/// Sends one datagram from inside `ns` to `target` and returns the first reply.
pub fn udp_echo(ns: &Netns, target: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    ns.run(|| {
        let any: IpAddr = match target {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let s = UdpSocket::bind((any, 0))?;
        s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        s.send_to(payload, target)?;
        let mut buf = vec![0u8; 65536];
        let (n, _) = s.recv_from(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
}

/// One ICMP echo from inside `ns` (`ping -c1 -W1`, `-6` for IPv6); true when answered.
pub fn ping(ns: &Netns, addr: IpAddr) -> bool {
    let mut cmd = ns.command("ping");
    if addr.is_ipv6() {
        cmd.arg("-6");
    }
    cmd.args(["-c1", "-W1"])
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
