//! The bridge + portmap + firewall chain on a host with no working iptables (issue 11, item 5):
//! every iptables program fails in the plugins' mount namespace (`Host::without_iptables`), the
//! conflists carry NO backend key, so the plugins must find nftables themselves and do
//! everything in our `inet tether` table.
//!
//! ```text
//!   outside ns ── outside0 ──  host ns (iptables hidden from the plugins)  ── cni-ni<n> ── ctr-*
//!   198.51.100.2               198.51.100.1, table inet tether               10.91.<n>.0/24
//! ```
//!
//! Each test reads the state back with `nft list table inet tether`, checks that iptables
//! (read in the test's own mount namespace, where it works) holds nothing of ours, and ends
//! with nothing of its networks left in either.

mod common;

use std::io::Read;
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const PORTMAP: &str = env!("CARGO_BIN_EXE_portmap");

fn firewall() -> PathBuf {
    netns_fixtures::plugin("firewall")
}

fn host() -> Host {
    let fw = firewall();
    let fw = fw.to_str().expect("utf-8 target dir");
    Host::new(Impl::Tether, &[("portmap", PORTMAP), ("firewall", fw)]).without_iptables()
}

/// Network `name` on bridge `cni-ni<n>` (10.91.<n>.0/24, fd91:<n>::/64): bridge with ipMasq,
/// portmap, firewall with `policy`, and no backend key anywhere.
fn list(h: &Host, name: &str, n: u8, policy: &str) -> cni::runtime::ConfList {
    conflist(
        "1.0.0",
        name,
        &format!("cni-ni{n}"),
        &[&format!("10.91.{n}.0/24"), &format!("fd91:{n}::/64")],
        &h.dir().join("ipam"),
        vec![
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            json!({"type": "firewall", "ingressPolicy": policy}),
        ],
    )
}

fn ports(maps: Value) -> Value {
    json!({ "portMappings": maps })
}

fn map(proto: &str, host_port: u16, container_port: u16, host_ip: Option<&str>) -> Value {
    let mut m = json!({"hostPort": host_port, "containerPort": container_port, "protocol": proto});
    if let Some(ip) = host_ip {
        m["hostIP"] = json!(ip);
    }
    m
}

fn table(h: &Host) -> String {
    h.host.sh("nft", &["list", "table", "inet", "tether"])
}

/// The plugins chose nftables and left iptables alone: `iptables-save` (where iptables works)
/// is exactly what it was before the test.
#[track_caller]
fn assert_iptables_untouched(h: &Host, before: &[String]) {
    let (gone, new) = diff(before, &h.snapshot());
    assert!(
        gone.is_empty() && new.is_empty(),
        "iptables changed: gone {gone:#?}, new {new:#?}"
    );
}

/// Nothing of these networks is left: no element, set, map or chain whose comment names them,
/// and iptables as it was.
#[track_caller]
fn assert_clean(h: &Host, nets: &[&str], ipt_before: &[String]) {
    assert_clean_nft(h, nets);
    assert_iptables_untouched(h, ipt_before);
}

/// Nothing of these networks in our nftables table.
#[track_caller]
fn assert_clean_nft(h: &Host, nets: &[&str]) {
    let t = h
        .host
        .command("nft")
        .args(["list", "table", "inet", "tether"])
        .output()
        .expect("run nft");
    let t = String::from_utf8_lossy(&t.stdout);
    for n in nets {
        assert!(!t.contains(&format!("net={n} ")), "{n} left in:\n{t}");
        assert!(!t.contains(&format!("net={n}\"")), "{n} left in:\n{t}");
    }
    assert!(!t.contains("id=ctr-"), "an attachment left in:\n{t}");
}

/// The source address a TCP connection from `from` to `outside_ip:port` arrives with.
fn source_seen_outside(
    outside: &netns_fixtures::Netns,
    outside_ip: IpAddr,
    from: &Container,
) -> IpAddr {
    let l = outside.run(|| TcpListener::bind((outside_ip, 9000)).expect("bind outside"));
    let accept = std::thread::spawn(move || {
        let (mut s, peer) = l.accept().expect("accept");
        let mut buf = [0u8; 4];
        let _ = s.read(&mut buf);
        peer.ip()
    });
    tcp_echo(
        &from.ns,
        sa(outside_ip, 9000),
        "x",
        Duration::from_millis(500),
    )
    .ok();
    accept.join().expect("accept thread")
}

#[test]
fn masquerade_and_published_ports_work_on_nftables_with_no_backend_keys() {
    let h = host();
    let o = h.add_outside();
    let ipt_before = h.snapshot();
    let l = list(&h, "ninet", 1, "same-bridge");
    let a = h.container("ctr-a");
    let b = h.container("ctr-b");
    let host_v4 = o.host_v4.to_string();
    let caps = ports(json!([
        map("tcp", 8080, 80, None),
        map("tcp", 8081, 80, Some("0.0.0.0")),
        map("tcp", 8082, 80, Some(&host_v4)),
        map("udp", 5353, 80, None),
    ]));
    let ra = h.add(&l, &a, caps.clone()).expect("ADD a");
    h.add(&l, &b, json!({})).expect("ADD b (no ports)");
    let _echo = Echo::start(&a.ns, 80, "A");
    let gw = gateway_of(&ra, false);

    let t = table(&h);
    for want in [
        "tcp . 8080 comment \"tether net=ninet id=ctr-a",
        "udp . 5353 comment \"tether net=ninet id=ctr-a",
        "198.51.100.1 . tcp . 8082",
    ] {
        assert!(t.contains(want), "{want:?} not in:\n{t}");
    }
    assert_iptables_untouched(&h, &ipt_before);

    // Masquerade: a container's connection reaches the outside from the host's address.
    assert_eq!(
        source_seen_outside(&o.ns, o.outside_v4.into(), &b),
        IpAddr::from(o.host_v4)
    );
    // Published: from outside (no hostIP, 0.0.0.0, the host IP), the host itself (its address,
    // the gateway, 127.0.0.1), hairpin from the container itself and from its neighbour.
    for port in [8080, 8081, 8082] {
        assert_tcp(&o.ns, sa(o.host_v4, port), "A");
    }
    assert_tcp(&h.host, sa(o.host_v4, 8080), "A");
    assert_tcp(&h.host, sa(gw, 8080), "A");
    assert_tcp(&h.host, sa(ip("127.0.0.1"), 8080), "A");
    for from in [&a, &b] {
        assert_tcp(&from.ns, sa(o.host_v4, 8080), "A");
        assert_tcp(&from.ns, sa(gw, 8080), "A");
    }
    assert_tcp_blocked(&o.ns, sa(o.host_v4, 8083));
    settle_ipv6(&h.host);
    settle_ipv6(&a.ns);
    assert_tcp(&o.ns, sa(o.host_v6, 8080), "A");

    // UDP through conntrack: the same client 5-tuple reaches a replacement container only if
    // DEL flushed the entry.
    let client = udp_client(&o.ns, sa(o.outside_v4, 40000));
    let to = sa(o.host_v4, 5353);
    assert_eq!(udp_ask(&client, to, "1").as_deref(), Some("A:1"));
    h.check(&l, &a, caps.clone()).expect("CHECK a");
    h.del(&l, &a, caps.clone()).expect("DEL a");
    drop(_echo);
    assert_tcp_blocked(&o.ns, sa(o.host_v4, 8080));
    let c = h.container("ctr-c");
    let udp_caps = ports(json!([map("udp", 5353, 80, None)]));
    h.add(&l, &c, udp_caps.clone()).expect("ADD c");
    let _echo_c = Echo::start(&c.ns, 80, "C");
    assert_eq!(udp_ask(&client, to, "2").as_deref(), Some("C:2"));

    h.del(&l, &c, udp_caps).expect("DEL c");
    h.del(&l, &b, json!({})).expect("DEL b");
    assert_clean(&h, &["ninet"], &ipt_before);
}

struct Ctr {
    c: Container,
    v4: IpAddr,
    _echo: Echo,
}

fn start(h: &Host, l: &cni::runtime::ConfList, id: &str) -> Ctr {
    let c = h.container(id);
    let r = h
        .add(l, &c, json!({}))
        .unwrap_or_else(|e| panic!("ADD {id}: {e:?}"));
    let echo = Echo::start(&c.ns, 80, id);
    Ctr {
        v4: addr_of(&r, false),
        c,
        _echo: echo,
    }
}

fn reaches(from: &Ctr, to: &Ctr) -> bool {
    tcp_echo(&from.c.ns, sa(to.v4, 80), "x", Duration::from_millis(1000)).is_ok()
}

/// open, same-bridge (two networks) and isolated, each on its own bridge, with packets both ways.
#[test]
fn ingress_policies_filter_packets_on_nftables() {
    let h = host();
    let ipt_before = h.snapshot();
    let open = list(&h, "niopen", 1, "open");
    let same = list(&h, "nisame", 2, "same-bridge");
    let same2 = list(&h, "nisame2", 4, "same-bridge");
    let iso = list(&h, "niiso", 3, "isolated");
    let (o1, o2) = (start(&h, &open, "ctr-o1"), start(&h, &open, "ctr-o2"));
    let (s1, s2) = (start(&h, &same, "ctr-s1"), start(&h, &same, "ctr-s2"));
    let s3 = start(&h, &same2, "ctr-s3");
    let (i1, i2) = (start(&h, &iso, "ctr-i1"), start(&h, &iso, "ctr-i2"));
    let t = table(&h);
    assert!(t.contains("net=niiso id=ctr-i1"), "{t}");

    // open: within the bridge, and to and from a same-bridge one (as the reference's isolation
    // chains: same-bridge separates same-bridge networks from each other).
    assert!(reaches(&o1, &o2) && reaches(&o2, &o1));
    assert!(reaches(&o1, &s1) && reaches(&s1, &o1));
    // same-bridge: open inside, closed between two same-bridge bridges.
    assert!(reaches(&s1, &s2) && reaches(&s2, &s1));
    assert!(!reaches(&s1, &s3), "nisame reached nisame2");
    assert!(!reaches(&s3, &s1), "nisame2 reached nisame");
    // isolated: not even within its own bridge; the host still reaches it.
    assert!(!reaches(&i1, &i2), "i1 reached i2 on an isolated bridge");
    assert!(!reaches(&i2, &i1), "i2 reached i1 on an isolated bridge");
    assert_tcp(&h.host, sa(i1.v4, 80), "ctr-i1");
    for (l, c) in [(&iso, &i1), (&same, &s1), (&open, &o1)] {
        h.check(l, &c.c, json!({})).expect("CHECK");
    }
    assert_iptables_untouched(&h, &ipt_before);

    for (l, c) in [
        (&open, o1),
        (&open, o2),
        (&same, s1),
        (&same, s2),
        (&same2, s3),
        (&iso, i1),
        (&iso, i2),
    ] {
        h.del(l, &c.c, json!({})).expect("DEL");
    }
    assert_clean(&h, &["niopen", "nisame", "nisame2", "niiso"], &ipt_before);
}

fn conf_without_prev(plugin: &str, name: &str) -> Value {
    let mut c = match plugin {
        "portmap" => json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        _ => json!({"type": "firewall", "ingressPolicy": "same-bridge"}),
    };
    c["cniVersion"] = json!("1.0.0");
    c["name"] = json!(name);
    c
}

/// Conflicts, CHECK after breakage, GC with valid attachments, DEL without prevResult and after
/// the netns is gone, and the last DEL taking the network's objects.
#[test]
fn lifecycle_on_nftables_conflicts_check_gc_and_del_without_state() {
    let h = host();
    let o = h.add_outside();
    let ipt_before = h.snapshot();
    let l = list(&h, "nilife", 1, "same-bridge");
    let caps = ports(json!([map("tcp", 8080, 80, None)]));
    let a = h.container("ctr-a");
    h.add(&l, &a, caps.clone()).expect("ADD a");
    let _echo = Echo::start(&a.ns, 80, "A");

    // A second container asking for the same host port is refused, and leaves nothing.
    let c = h.container("ctr-c");
    let err = h
        .add(&l, &c, caps.clone())
        .expect_err("same host port twice");
    assert!(format!("{err:?}").contains("8080"), "{err:?}");
    assert!(!table(&h).contains("id=ctr-c"), "{}", table(&h));
    assert_tcp(&o.ns, sa(o.host_v4, 8080), "A");

    // CHECK notices a published element deleted by hand; DEL and ADD put it back.
    h.host.sh(
        "nft",
        &[
            "delete",
            "element",
            "inet",
            "tether",
            "ports4",
            "{ tcp . 8080 }",
        ],
    );
    assert!(
        h.check(&l, &a, caps.clone()).is_err(),
        "CHECK after breakage"
    );
    h.del(&l, &a, caps.clone()).expect("DEL a");
    h.add(&l, &a, caps.clone()).expect("ADD a again");
    h.check(&l, &a, caps.clone()).expect("CHECK after repair");
    assert_tcp(&o.ns, sa(o.host_v4, 8080), "A");
    // CHECK notices our forward chain emptied by hand; the next ADD rewrites it.
    h.host
        .sh("nft", &["flush", "chain", "inet", "tether", "forward"]);
    assert!(h.check(&l, &a, caps.clone()).is_err(), "CHECK after flush");
    let b = h.container("ctr-b");
    h.add(&l, &b, json!({})).expect("ADD b");
    h.check(&l, &a, caps.clone())
        .expect("CHECK after the next ADD");

    // GC with b valid: a's elements go, b's stay.
    h.gc(&l, &[&b]).expect("GC");
    let t = table(&h);
    assert!(!t.contains("id=ctr-a"), "GC left a:\n{t}");
    assert!(t.contains("id=ctr-b"), "GC took b:\n{t}");
    assert_tcp_blocked(&o.ns, sa(o.host_v4, 8080));

    // DEL of b straight to each plugin, without prevResult (a runtime that lost its cache).
    for (p, bin) in [
        ("firewall", firewall()),
        ("portmap", PathBuf::from(PORTMAP)),
    ] {
        h.exec(
            Path::new(&bin),
            "DEL",
            Some(&b),
            &conf_without_prev(p, "nilife"),
        )
        .unwrap_or_else(|e| panic!("{p} DEL without prevResult: {e:?}"));
    }
    assert!(!table(&h).contains("id=ctr-b"), "{}", table(&h));
    h.del(&l, &b, json!({})).expect("DEL b through the list");

    // DEL after the container's netns is gone.
    let d = h.container("ctr-d");
    h.add(&l, &d, caps.clone()).expect("ADD d");
    let rt = cni::runtime::RuntimeConf {
        capability_args: caps.as_object().cloned().unwrap_or_default(),
        ..d.ns.attachment(&d.id, "eth0")
    };
    drop(d);
    h.h.del(&l, &rt).expect("DEL d after its netns is gone");
    h.h.del(&l, &rt).expect("DEL d again");
    // The last DEL of the network took its objects (masquerade set and chain) with it.
    h.del(&l, &a, caps).expect("DEL a");
    h.del(&l, &c, json!({})).expect("DEL c");
    assert_clean(&h, &["nilife"], &ipt_before);
}

/// The other way round, on a host whose iptables works: a chain published through iptables (no
/// keys, the default) and deleted with every plugin set to nftables. DEL still cleans the
/// iptables side (our chains are there, so it cannot be skipped) and strands nothing.
#[test]
fn a_del_on_nftables_still_removes_what_iptables_published() {
    let fw = firewall();
    let fw = fw.to_str().expect("utf-8 target dir");
    let h = Host::new(Impl::Tether, &[("portmap", PORTMAP), ("firewall", fw)]);
    let o = h.add_outside();
    let ipt_before = h.snapshot();
    let l = list(&h, "niswitch", 1, "same-bridge");
    let a = h.container("ctr-a");
    let caps = ports(json!([map("tcp", 8080, 80, None)]));
    h.add(&l, &a, caps.clone()).expect("ADD on iptables");
    let _echo = Echo::start(&a.ns, 80, "A");
    assert_tcp(&o.ns, sa(o.host_v4, 8080), "A");
    let (_, new) = diff(&ipt_before, &h.snapshot());
    assert!(
        new.iter().any(|l| l.contains("id=ctr-a ")),
        "nothing published through iptables: {new:#?}"
    );

    let mut on_nft = l.clone();
    on_nft.plugins[0]["ipMasqBackend"] = json!("nftables");
    on_nft.plugins[1]["backend"] = json!("nftables");
    on_nft.plugins[2]["backend"] = json!("nftables");
    h.del(&on_nft, &a, caps).expect("DEL on nftables");
    assert_tcp_blocked(&o.ns, sa(o.host_v4, 8080));
    let (_, left) = diff(&ipt_before, &h.snapshot());
    let ours: Vec<&String> = left
        .iter()
        .filter(|l| l.contains("niswitch") || l.contains("id=ctr-a"))
        .collect();
    assert!(ours.is_empty(), "DEL on nftables stranded: {ours:#?}");
    assert_clean_nft(&h, &["niswitch"]);
}
