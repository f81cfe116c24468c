//! Masquerade really rewrites the source: client ns -> router ns (masquerade) -> outside ns.
//!
//! The outside namespace has no route back to the client subnet, so a connection only succeeds
//! when the router rewrote the source to its own outside address, and the server sees that
//! address as the peer. A chain for another subnet must not masquerade the client.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use netns_fixtures::Netns;
use tether_netfilter::masquerade_ensure;

fn connect(client: &Netns, to: SocketAddr) -> std::io::Result<TcpStream> {
    client.run(|| TcpStream::connect_timeout(&to, Duration::from_millis(700)))
}

#[test]
fn masquerade_rewrites_the_source_address() {
    for (backend, tools) in backends() {
        let (client, router, outside) = (ns(), ns(), ns());
        ip(
            &router,
            &format!(
                "link add r-in type veth peer name c0 netns {}",
                client.path().display()
            ),
        );
        ip(
            &router,
            &format!(
                "link add r-out type veth peer name o0 netns {}",
                outside.path().display()
            ),
        );
        ip(&router, "addr add 10.50.0.1/24 dev r-in");
        ip(&router, "addr add 192.168.50.1/24 dev r-out");
        ip(&router, "link set r-in up");
        ip(&router, "link set r-out up");
        ip(&client, "addr add 10.50.0.2/24 dev c0");
        ip(&client, "link set c0 up");
        ip(&client, "route add default via 10.50.0.1");
        ip(&outside, "addr add 192.168.50.2/24 dev o0");
        ip(&outside, "link set o0 up");
        let fwd = router
            .command("sh")
            .args(["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
            .status()
            .unwrap();
        assert!(fwd.success());

        let listener = outside.run(|| TcpListener::bind("192.168.50.2:0")).unwrap();
        let server = listener.local_addr().unwrap();

        // Without masquerade, replies have no route back: the connection must fail.
        assert!(
            connect(&client, server).is_err(),
            "{backend}: connected without masquerade"
        );

        let nf = nf(&router, &tools);
        // Another network's subnet (the client's address is not in it): still no way back.
        masquerade_ensure(&nf, "pkt", &[net("10.51.0.2/24")], false).unwrap();
        assert!(
            connect(&client, server).is_err(),
            "{backend}: masqueraded by another subnet's chain"
        );
        masquerade_ensure(&nf, "pkt", &[net("10.50.0.9/24")], false).unwrap();
        let mut stream = connect(&client, server)
            .unwrap_or_else(|e| panic!("{backend}: connect through masquerade: {e}"));
        let (mut accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip().to_string(), "192.168.50.1", "{backend}");
        stream.write_all(b"ping").unwrap();
        let mut buf = [0; 4];
        accepted.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        drop((stream, accepted));
    }
}
