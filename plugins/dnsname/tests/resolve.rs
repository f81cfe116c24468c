//! Containers on one network resolve each other by name and alias, short and qualified, A and
//! AAAA, PTR for their addresses, NXDOMAIN for unknown names in the domain, the rest forwarded
//! to the host's resolvers; a removed container is gone at once; the last DEL stops the server.

mod common;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

#[test]
fn two_containers_resolve_each_other_and_a_removed_one_is_gone_at_once() {
    let net = Net::new();
    let (a, rt_a, ra) = net.add("ca", "alpha", &["web", "WWW"]);
    let (b, rt_b, rb) = net.add("cb", "beta", &[]);
    let (a4, a6) = addrs(&ra);
    let (b4, b6) = addrs(&rb);
    // The result points the container at the gateway and searches the domain.
    assert_eq!(ra.dns.nameservers, vec![GW4.to_string(), GW6.to_string()]);
    assert_eq!(ra.dns.search, vec![DOMAIN.to_string()]);

    let from_b = client(&b);
    for n in [
        "alpha",
        "alpha.dns.tether",
        "ALPHA.dns.tether.",
        "web",
        "www.dns.tether",
    ] {
        assert_eq!(
            must(&from_b, n, RecordType::A),
            (ResponseCode::NoError, vec![a4.clone()]),
            "{n}"
        );
        assert_eq!(
            must(&from_b, n, RecordType::AAAA),
            (ResponseCode::NoError, vec![a6.clone()]),
            "{n}"
        );
    }
    let from_a = client(&a);
    assert_eq!(must(&from_a, "beta", RecordType::A).1, vec![b4.clone()]);
    assert_eq!(
        must(&from_a, "beta.dns.tether", RecordType::AAAA).1,
        vec![b6.clone()]
    );
    // Over IPv6 to the v6 gateway too (retried while the bridge's address leaves DAD).
    let from_a6 = client6(&a);
    let v6 = (0..30)
        .find_map(|_| {
            ask(&from_a6, GW6, "beta", RecordType::A).ok().or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(100));
                None
            })
        })
        .expect("query over IPv6");
    assert_eq!(v6.1, vec![b4.clone()]);

    // dig (dnsutils) as a real client: EDNS, a cookie, the search domain from its own flags.
    let dig = b
        .command("dig")
        .args([
            "@10.77.0.1",
            "+short",
            "+tries=1",
            "+time=3",
            "web.dns.tether",
            "A",
        ])
        .output()
        .expect("dig (apt-get install dnsutils)");
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), a4, "{dig:?}");
    let dig = b
        .command("dig")
        .args(["@10.77.0.1", "+tries=1", "+time=3", "nope.dns.tether"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dig.stdout);
    assert!(
        text.contains("status: NXDOMAIN") && text.contains("EDNS"),
        "{text}"
    );

    // PTR of both families.
    let rev4 = {
        let o: Vec<&str> = a4.split('.').rev().collect();
        format!("{}.in-addr.arpa", o.join("."))
    };
    assert_eq!(
        must(&from_b, &rev4, RecordType::PTR),
        (ResponseCode::NoError, vec!["alpha.dns.tether.".to_string()])
    );
    let ip6: std::net::Ipv6Addr = a6.parse().unwrap();
    let nibbles: String = ip6
        .octets()
        .iter()
        .rev()
        .map(|b| format!("{:x}.{:x}.", b & 0xf, b >> 4))
        .collect();
    assert_eq!(
        must(&from_b, &format!("{nibbles}ip6.arpa"), RecordType::PTR).1,
        vec!["alpha.dns.tether.".to_string()]
    );

    // Unknown in the domain: NXDOMAIN from us; elsewhere: the outside resolver's answer.
    assert_eq!(
        must(&from_b, "gamma.dns.tether", RecordType::A).0,
        ResponseCode::NXDomain
    );
    assert_eq!(
        must(&from_b, "host.example.test", RecordType::A),
        (ResponseCode::NoError, vec!["192.0.2.7".to_string()])
    );
    assert_eq!(
        must(&from_b, "nothing.invalid", RecordType::A).0,
        ResponseCode::NXDomain
    );

    // A removed container is gone the moment DEL returns.
    let pid = net.server_pid().expect("server pid file");
    assert!(alive(pid));
    net.del(&rt_a);
    assert_eq!(
        must(&from_b, "alpha.dns.tether", RecordType::A).0,
        ResponseCode::NXDomain
    );
    assert_eq!(
        must(&from_b, "web.dns.tether", RecordType::A).0,
        ResponseCode::NXDomain
    );
    assert_eq!(must(&from_b, "beta", RecordType::A).1, vec![b4]);
    assert_eq!(
        net.server_pid(),
        Some(pid),
        "the server keeps running for beta"
    );
    // DEL is idempotent.
    net.del(&rt_a);
    net.del(&rt_b);
    net.assert_clean(&[pid]);
}

#[test]
fn a_hundred_containers_resolve_each_other() {
    let net = Net::new();
    let ctrs: Vec<_> = (0..100)
        .map(|i| net.add(&format!("c{i}"), &format!("n{i}"), &[&format!("alias{i}")]))
        .collect();
    let pid = net.server_pid().unwrap();
    // Every container asks for another's name (short), the next one's alias (qualified).
    for (i, (ns, _, _)) in ctrs.iter().enumerate() {
        let c = client(ns);
        let j = (i + 37) % 100;
        let want = addrs(&ctrs[j].2).0;
        assert_eq!(
            must(&c, &format!("n{j}"), RecordType::A).1,
            vec![want.clone()]
        );
        let k = (i + 1) % 100;
        let want_k = addrs(&ctrs[k].2).1;
        assert_eq!(
            must(&c, &format!("alias{k}.{DOMAIN}"), RecordType::AAAA).1,
            vec![want_k]
        );
    }
    // One client resolves all hundred.
    let c = client(&ctrs[0].0);
    for (j, (_, _, r)) in ctrs.iter().enumerate() {
        assert_eq!(
            must(&c, &format!("n{j}.{DOMAIN}"), RecordType::A).1,
            vec![addrs(r).0]
        );
    }
    for (_, rt, _) in &ctrs {
        net.del(rt);
    }
    net.assert_clean(&[pid]);
}

#[test]
fn queries_over_tcp_are_answered_and_forwarded() {
    use std::io::{Read, Write};
    let net = Net::new();
    let (a, rt, ra) = net.add("ca", "alpha", &[]);
    let tcp = |name: &str| {
        let mut s = a.run(|| std::net::TcpStream::connect((GW4, 53)).unwrap());
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let q = message(name, RecordType::A).to_vec().unwrap();
        s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
        s.write_all(&q).unwrap();
        let mut l = [0u8; 2];
        s.read_exact(&mut l).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(l) as usize];
        s.read_exact(&mut buf).unwrap();
        parse(&hickory_proto::op::Message::from_vec(&buf).unwrap())
    };
    assert_eq!(tcp("alpha").1, vec![addrs(&ra).0]);
    // The outside resolver speaks UDP only: a TCP client's forward to it fails to SERVFAIL
    // (quickly, a refused connection), never hangs.
    assert_eq!(tcp("x.example.test").0, ResponseCode::ServFail);
    let pid = net.server_pid().unwrap();
    net.del(&rt);
    net.assert_clean(&[pid]);
}

#[test]
fn a_resolv_conf_that_names_the_gateway_is_no_forwarding_loop() {
    let net = Net::new();
    // The host's resolv.conf names only the gateway itself: forwarding there would loop.
    std::fs::write(
        net.h.dir().join("resolv.conf"),
        format!("nameserver {GW4}\n"),
    )
    .unwrap();
    let (a, rt, _) = net.add("ca", "alpha", &[]);
    let c = client(&a);
    let t0 = std::time::Instant::now();
    assert_eq!(
        must(&c, "x.example.test", RecordType::A).0,
        ResponseCode::ServFail
    );
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        t0.elapsed()
    );
    // Local names still answer.
    assert_eq!(must(&c, "alpha", RecordType::A).0, ResponseCode::NoError);
    let pid = net.server_pid().unwrap();
    net.del(&rt);
    net.assert_clean(&[pid]);
}
