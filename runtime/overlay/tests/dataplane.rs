//! The overlay's data plane between three hosts, through real agents and a real etcd.

mod cluster;

use cluster::{Cluster, ping_args, wait_for};
use netns_fixtures::{EchoServer, tcp_echo, udp_echo};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[test]
fn containers_on_three_hosts_exchange_icmp_tcp_and_udp_and_teardown_leaves_nothing() {
    let mut c = Cluster::new(3, 42, 5);
    c.init("10.200.0.0/16", &["--vni", "42"]);
    for i in 0..3 {
        c.start_agent(i);
    }
    let leases: Vec<_> = (0..3).map(|i| c.wait_lease(i)).collect();
    let subnets: std::collections::HashSet<_> = leases.iter().map(|l| l.subnet).collect();
    assert_eq!(subnets.len(), 3, "distinct subnets: {leases:?}");
    for l in &leases {
        assert_eq!(l.mtu, 1450, "underlay 1500 - 50");
        assert_eq!(l.vni, 42);
        assert_eq!(l.overlay.to_string(), "10.200.0.0/16");
    }
    for i in 0..3 {
        c.attach_container(i);
        c.wait_routes(i, 2);
    }
    // The device as flannel makes it: learning off, the port, MTU, address = subnet network /32.
    let d = c.hosts[0]
        .ns
        .ip_json(&["-d", "addr", "show", "dev", "tvx-42"]);
    let link = &d[0];
    assert_eq!(link["mtu"], 1450);
    let info = &link["linkinfo"]["info_data"];
    assert_eq!(info["id"], 42);
    assert_eq!(info["port"], 4789);
    assert_eq!(info["learning"], false);
    assert_eq!(info["local"], "192.168.77.10");
    let ipnetwork::IpNetwork::V4(s0) = leases[0].subnet else {
        panic!()
    };
    assert_eq!(link["addr_info"][0]["local"], s0.network().to_string());
    assert_eq!(link["addr_info"][0]["prefixlen"], 32);
    // Per peer: a permanent neighbour, a permanent FDB entry to its public IP, an onlink route.
    let peers = c.hosts[0].state().read_peers().unwrap();
    assert_eq!(peers.len(), 2);
    let neigh = c.hosts[0].ns.sh("ip", &["neigh", "show", "dev", "tvx-42"]);
    let fdb = c.hosts[0]
        .ns
        .sh("bridge", &["fdb", "show", "dev", "tvx-42"]);
    let routes = c.overlay_routes(0);
    for p in &peers {
        let ipnetwork::IpNetwork::V4(s) = p.subnet else {
            panic!()
        };
        let mac = p.vtep_mac.as_deref().unwrap();
        assert!(
            neigh.contains(&format!("{} lladdr {mac} PERMANENT", s.network())),
            "{neigh}"
        );
        assert!(
            fdb.contains(&format!("{mac} dst {} self permanent", p.public_ip)),
            "{fdb}"
        );
        assert!(
            routes.iter().any(
                |r| r.starts_with(&format!("{s} via {} ", s.network())) && r.contains("onlink")
            ),
            "{routes:?}"
        );
    }
    c.wait_full_mesh(&[0, 1, 2]);
    // TCP and UDP between containers of different hosts.
    let target = IpAddr::V4(c.container_ip(2));
    let tcp = EchoServer::tcp(c.container(2), SocketAddr::new(target, 7000));
    let udp = EchoServer::udp(c.container(2), SocketAddr::new(target, 7001));
    assert_eq!(
        tcp_echo(c.container(0), tcp.addr(), b"over tcp").unwrap(),
        b"over tcp"
    );
    assert_eq!(
        udp_echo(c.container(1), udp.addr(), b"over udp").unwrap(),
        b"over udp"
    );
    assert_eq!(
        tcp.peers()[0].ip(),
        IpAddr::V4(c.container_ip(0)),
        "no NAT inside the overlay"
    );
    drop((tcp, udp));
    // MTU 1450: 1400 bytes of ICMP payload with DF fit, and so does a full 1450-byte packet
    // (1422 + 28: 1500 on the underlay with the 50 of VXLAN); 1450 bytes of payload do not,
    // and ping says why.
    let to = c.container_ip(1);
    assert!(ping_args(c.container(0), to, &["-M", "do", "-s", "1400"]));
    assert!(ping_args(c.container(0), to, &["-M", "do", "-s", "1422"]));
    let big = c
        .container(0)
        .command("ping")
        .args([
            "-n",
            "-c1",
            "-W1",
            "-M",
            "do",
            "-s",
            "1450",
            &to.to_string(),
        ])
        .output()
        .unwrap();
    assert!(!big.status.success());
    let text =
        String::from_utf8_lossy(&big.stdout).to_string() + &String::from_utf8_lossy(&big.stderr);
    assert!(text.contains("message too long, mtu=1450"), "{text}");
    // In a steady state the reconcile loop finds nothing to fix.
    for h in &c.hosts {
        assert!(!h.log_text().contains("reconcile:"), "{}", h.log_text());
    }
    c.teardown_and_assert_clean();
}

#[test]
fn a_device_route_or_fdb_entry_deleted_by_hand_is_restored_within_a_second() {
    let mut c = Cluster::new(2, 7, 5);
    c.init("10.201.0.0/16", &["--vni", "7"]);
    c.two_hosts_meshed();
    let h = &c.hosts[0].ns;
    let restored = |what: &str, check: &dyn Fn() -> bool| {
        wait_for(Duration::from_secs(1), what, || check().then_some(()));
    };
    // The route.
    let route = c.overlay_routes(0)[0].clone();
    let dst = route.split_whitespace().next().unwrap().to_string();
    h.sh("ip", &["route", "del", &dst, "dev", "tvx-7"]);
    restored("route restored", &|| c.overlay_routes(0).len() == 1);
    // The FDB entry.
    let peer = &c.hosts[0].state().read_peers().unwrap()[0];
    let mac = peer.vtep_mac.clone().unwrap();
    let dst_ip = peer.public_ip.to_string();
    h.sh(
        "bridge",
        &["fdb", "del", &mac, "dev", "tvx-7", "dst", &dst_ip, "self"],
    );
    restored("FDB entry restored", &|| {
        h.sh("bridge", &["fdb", "show", "dev", "tvx-7"])
            .contains(&mac)
    });
    // The device itself (its entries go with it).
    h.sh("ip", &["link", "del", "tvx-7"]);
    restored("device and route restored", &|| {
        c.overlay_routes(0).len() == 1
    });
    wait_for(Duration::from_secs(2), "ping after the restore", || {
        c.ping(0, 1).then_some(())
    });
    assert!(
        c.hosts[0].log_text().contains("recreated tvx-7"),
        "{}",
        c.hosts[0].log_text()
    );
    c.teardown_and_assert_clean();
}

#[test]
fn a_host_joining_or_leaving_is_applied_by_every_peer_within_a_second() {
    let mut c = Cluster::new(3, 8, 30);
    c.init("10.202.0.0/16", &["--vni", "8"]);
    c.start_agent(0);
    c.start_agent(1);
    c.wait_routes(0, 1);
    c.wait_routes(1, 1);
    c.start_agent(2);
    c.wait_lease(2);
    let joined = std::time::Instant::now();
    for i in 0..2 {
        wait_for(Duration::from_secs(1), "join applied within 1 s", || {
            (c.overlay_routes(i).len() == 2).then_some(())
        });
    }
    eprintln!("join applied by both peers after {:?}", joined.elapsed());
    // SIGTERM revokes the lease: no waiting for the 30 s TTL.
    c.stop_agent(2, libc::SIGTERM);
    let left = std::time::Instant::now();
    for i in 0..2 {
        wait_for(Duration::from_secs(1), "leave applied within 1 s", || {
            (c.overlay_routes(i).len() == 1).then_some(())
        });
    }
    eprintln!("leave applied by both peers after {:?}", left.elapsed());
    c.assert_host_clean(2);
    c.teardown_and_assert_clean();
}

/// host-gw's routes on host `i`: overlay subnets via another host's public IP, out of eth0.
fn host_gw_routes(c: &Cluster, i: usize) -> Vec<String> {
    c.hosts[i]
        .ns
        .sh("ip", &["-4", "route", "show", "dev", "eth0"])
        .lines()
        .filter(|l| l.starts_with("10.204.") && l.contains(" via 192.168.77."))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_host_gw_backend_routes_via_peer_public_ips_without_encapsulation() {
    let mut c = Cluster::new(3, 9, 5);
    c.init("10.204.0.0/16", &["--vni", "9", "--backend", "host-gw"]);
    for i in 0..3 {
        c.start_agent(i);
    }
    for i in 0..3 {
        let l = c.wait_lease(i);
        assert_eq!(
            (l.backend.as_str(), l.mtu),
            ("host-gw", 1500),
            "no encapsulation"
        );
        c.attach_container(i);
    }
    for i in 0..3 {
        wait_for(Duration::from_secs(5), "host-gw routes", || {
            (host_gw_routes(&c, i).len() == 2).then_some(())
        });
        assert!(
            c.hosts[i]
                .ns
                .netlink()
                .link_by_name("tvx-9")
                .unwrap()
                .is_none()
        );
    }
    for p in c.hosts[0].state().read_peers().unwrap() {
        assert_eq!(p.vtep_mac, None);
        let want = format!("{} via {} ", p.subnet, p.public_ip);
        assert!(
            host_gw_routes(&c, 0).iter().any(|r| r.starts_with(&want)),
            "{want}"
        );
    }
    c.wait_full_mesh(&[0, 1, 2]);
    // A full-size 1500-byte packet with DF passes: nothing is added on the wire.
    assert!(ping_args(
        c.container(0),
        c.container_ip(2),
        &["-M", "do", "-s", "1472"]
    ));
    // A route deleted by hand comes back.
    let r = host_gw_routes(&c, 1)[0].clone();
    let dst = r.split_whitespace().next().unwrap().to_string();
    c.hosts[1].ns.sh("ip", &["route", "del", &dst]);
    wait_for(Duration::from_secs(1), "host-gw route restored", || {
        (host_gw_routes(&c, 1).len() == 2).then_some(())
    });
    // That was the only thing reconcile ever had to fix.
    let fixes = |i: usize| c.hosts[i].log_text().matches("reconcile:").count();
    assert_eq!(
        (fixes(0), fixes(1), fixes(2)),
        (0, 1, 0),
        "{}",
        c.hosts[1].log_text()
    );
    c.teardown_and_assert_clean();
    for i in 0..3 {
        assert!(
            host_gw_routes(&c, i).is_empty(),
            "host {i}: {:?}",
            host_gw_routes(&c, i)
        );
    }
}
