//! The host's resolvers (`nameserver` lines of resolv.conf) and forwarding to them.
//!
//! No forwarding loop: an upstream that is one of our own listen addresses (with our port) is
//! dropped, so a resolv.conf that points at the gateway (a container's, copied to the host by
//! mistake) makes the server answer SERVFAIL instead of asking itself forever.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets before the next is tried.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many upstreams are tried for one query (as glibc's MAXNS).
pub const MAX_UPSTREAMS: usize = 3;

/// The resolvers of `path`, minus our own addresses. A missing file means no upstreams.
pub fn from_resolv_conf(path: &Path, ours: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse(&text, ours, port)
}

fn parse(text: &str, ours: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        // `fe80::1%eth0` scoped addresses are not supported: skipped.
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        if (port == 53 && ours.contains(&ip)) || ip.is_unspecified() {
            continue;
        }
        let sa = SocketAddr::new(ip, 53);
        if !out.contains(&sa) {
            out.push(sa);
        }
    }
    out.truncate(MAX_UPSTREAMS);
    out
}

/// Asks the upstreams in order over UDP; the first answer with the query's id wins.
pub async fn forward_udp(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    first_answer(upstreams, "forward", |up| udp_once(up, query)).await
}

/// The first of `upstreams` that answers `ask` within TIMEOUT; the others' failures are
/// logged (debug, prefixed `what`) and skipped.
async fn first_answer<F, Fut>(upstreams: &[SocketAddr], what: &str, ask: F) -> Option<Vec<u8>>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<Vec<u8>>>,
{
    for up in upstreams {
        match tokio::time::timeout(TIMEOUT, ask(*up)).await {
            Ok(Ok(resp)) => return Some(resp),
            Ok(Err(e)) => tracing::debug!(%up, "{what}: {e}"),
            Err(_) => tracing::debug!(%up, "{what}: timed out"),
        }
    }
    None
}

async fn udp_once(up: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    // A fresh socket per query: a random source port, and connect() filters other senders.
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// Asks the upstreams in order over TCP (for clients that asked over TCP).
pub async fn forward_tcp(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    first_answer(upstreams, "forward tcp", |up| tcp_once(up, query)).await
}

async fn tcp_once(up: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(up).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(query).await?;
    let mut l = [0u8; 2];
    s.read_exact(&mut l).await?;
    let mut buf = vec![0u8; u16::from_be_bytes(l) as usize];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_upstreams_skip_our_own_addresses() {
        let text = "# c\nsearch x\nnameserver 10.0.0.1\nnameserver 192.0.2.53\nnameserver ::1\n\
                    nameserver fe80::1%eth0\nnameserver 192.0.2.53\nnameserver 0.0.0.0\n";
        let ours: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap()];
        let got = parse(text, &ours, 53);
        let want: Vec<SocketAddr> = vec![
            "192.0.2.53:53".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
        ];
        assert_eq!(got, want);
    }
}
