//! portmap end to end: real namespaces, real rules, real packets, the real binary chained after
//! an interface plugin through a conflist.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const PORTMAP: &str = env!("CARGO_BIN_EXE_portmap");
const V4_NET: &str = "10.89.0.0/24";
const V6_NET: &str = "fd89::/64";

/// Portmap's rules of one container in a snapshot (the bridge's masquerade rules carry the same
/// comment, so look only at portmap's chains).
fn portmap_rules(snap: &[String], id: &str) -> Vec<String> {
    snap.iter()
        .filter(|l| l.contains(&format!("id={id} ")))
        .filter(|l| l.contains("TETHER-DN-") || l.contains("-A TETHER-HOSTPORT-DNAT "))
        .cloned()
        .collect()
}

fn host() -> Host {
    Host::new(Impl::Tether, &[("portmap", PORTMAP)])
}

fn list(h: &Host, name: &str, version: &str) -> cni::runtime::ConfList {
    conflist(
        version,
        name,
        "cni-pm0",
        &[V4_NET, V6_NET],
        &h.dir().join("ipam"),
        vec![json!({"type": "portmap", "capabilities": {"portMappings": true}})],
    )
}

fn ports(maps: Value) -> Value {
    json!({ "portMappings": maps })
}

fn tcp(host_port: u16, container_port: u16) -> Value {
    json!({"hostPort": host_port, "containerPort": container_port, "protocol": "tcp"})
}

#[test]
fn publishes_to_outside_host_localhost_and_hairpin() {
    let h = host();
    let o = h.add_outside();
    let outside = &o.ns;
    let l = list(&h, "pmnet", "1.0.0");
    let a = h.container("ctr-a");
    let b = h.container("ctr-b");
    let caps = ports(json!([tcp(8080, 80)]));
    let ra = h.add(&l, &a, caps.clone()).expect("ADD a");
    let rb = h.add(&l, &b, json!({})).expect("ADD b (no ports)");
    let _echo = Echo::start(&a.ns, 80, "A");
    let gw = gateway_of(&ra, false);

    // Another host, through the host's own address.
    assert_tcp(outside, sa(o.host_v4, 8080), "A");
    // The host itself: its LAN address, the gateway address, and 127.0.0.1.
    assert_tcp(&h.host, sa(o.host_v4, 8080), "A");
    assert_tcp(&h.host, sa(gw, 8080), "A");
    assert_tcp(&h.host, sa(ip("127.0.0.1"), 8080), "A");
    // Hairpin: the container itself and its neighbour, through both host addresses.
    assert_tcp(&a.ns, sa(o.host_v4, 8080), "A");
    assert_tcp(&a.ns, sa(gw, 8080), "A");
    assert_tcp(&b.ns, sa(o.host_v4, 8080), "A");
    assert_tcp(&b.ns, sa(gw, 8080), "A");
    // Nothing published on other ports.
    assert_tcp_blocked(outside, sa(o.host_v4, 8081));

    h.check(&l, &a, caps.clone()).expect("CHECK");
    let _ = rb;
    h.del(&l, &a, caps).expect("DEL a");
    assert_tcp_blocked(outside, sa(o.host_v4, 8080));
}

#[test]
fn ipv6_from_outside_and_from_the_host() {
    let h = host();
    let o = h.add_outside();
    let outside = &o.ns;
    let l = list(&h, "pmnet", "1.0.0");
    let a = h.container("ctr-a");
    let caps = ports(json!([tcp(8080, 80)]));
    let ra = h.add(&l, &a, caps.clone()).expect("ADD");
    let _echo = Echo::start(&a.ns, 80, "A");
    settle_ipv6(&h.host);
    settle_ipv6(&a.ns);
    assert_tcp(outside, sa(o.host_v6, 8080), "A");
    assert_tcp(&h.host, sa(o.host_v6, 8080), "A");
    assert_tcp(&h.host, sa(gateway_of(&ra, true), 8080), "A");
    h.check(&l, &a, caps.clone()).expect("CHECK");
    h.del(&l, &a, caps).expect("DEL");
    assert_tcp_blocked(outside, sa(o.host_v6, 8080));
}

/// A `portmap` that runs the iptables tools through wrappers logging each exec's name, so that a
/// test can tell which path a call took.
struct CountedTools {
    dir: tempfile::TempDir,
}

impl CountedTools {
    fn new() -> CountedTools {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let write = |name: &str, body: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let real_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        for fam in ["ip", "ip6"] {
            for suffix in ["", "-save", "-restore"] {
                let tool = format!("{fam}tables{suffix}");
                write(
                    &tool,
                    format!("echo {tool} >> {d}/calls\nPATH={real_path} exec {tool} \"$@\""),
                );
            }
        }
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        write("bin/portmap", format!("PATH={d}:$PATH exec {PORTMAP}"));
        CountedTools { dir }
    }

    fn portmap(&self) -> String {
        self.dir.path().join("bin/portmap").display().to_string()
    }

    /// The execs since the last call, sorted, and forgets them.
    fn take(&self) -> Vec<String> {
        let path = self.dir.path().join("calls");
        let mut calls: Vec<String> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let _ = std::fs::remove_file(&path);
        calls.sort();
        calls
    }
}

#[test]
fn add_and_del_list_one_chain_and_fall_back_to_a_full_read_when_it_does_not_settle_it() {
    let tools = CountedTools::new();
    let h = Host::new(Impl::Tether, &[("portmap", &tools.portmap())]);
    let o = h.add_outside();
    let l = list(&h, "pmnet", "1.0.0");
    let listed_then_written = [
        "ip6tables",
        "ip6tables-restore",
        "iptables",
        "iptables-restore",
    ];

    // First ADD on the host (no DNAT chain to list): the whole base is created with `-N`.
    let a = h.container("ctr-a");
    h.add(&l, &a, ports(json!([tcp(8080, 80)]))).expect("ADD a");
    assert_eq!(tools.take(), listed_then_written, "first ADD");
    // Later ADDs: the entry rules and `-C` checks of the base, no save either.
    let b = h.container("ctr-b");
    let rb = h.add(&l, &b, ports(json!([tcp(8081, 80)]))).expect("ADD b");
    assert_eq!(tools.take(), listed_then_written, "second ADD");
    let _echo_a = Echo::start(&a.ns, 80, "A");
    let _echo_b = Echo::start(&b.ns, 80, "B");
    assert_tcp(&o.ns, sa(o.host_v4, 8080), "A");
    assert_tcp(&o.ns, sa(o.host_v4, 8081), "B");
    assert_tcp(&o.ns, sa(o.host_v6, 8081), "B");
    // Both paths write the same rules: a fast ADD and a full one (a repeated ADD replaces).
    let fast = portmap_rules(&h.snapshot(), "ctr-b");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "pmnet", "type": "portmap",
        "runtimeConfig": ports(json!([tcp(8081, 80)])),
        "prevResult": rb.to_json("1.0.0"),
    });
    h.exec(tools.portmap().as_ref(), "ADD", Some(&b), &conf)
        .expect("repeated ADD b");
    assert!(tools.take().contains(&"iptables-save".to_string()));
    assert_eq!(portmap_rules(&h.snapshot(), "ctr-b"), fast);

    // A damaged base fails the checks; the full path repairs it.
    let good = h.snapshot();
    h.host.sh(
        "iptables",
        &[
            "-t",
            "nat",
            "-D",
            "OUTPUT",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-m",
            "comment",
            "--comment",
            "tether hostport DNAT",
            "-j",
            "TETHER-HOSTPORT-DNAT",
        ],
    );
    let c = h.container("ctr-c");
    h.add(&l, &c, ports(json!([tcp(8082, 80)]))).expect("ADD c");
    assert!(tools.take().contains(&"iptables-save".to_string()));
    let jumps = |snap: &[String]| {
        snap.iter()
            .filter(|l| l.contains("-j TETHER-HOSTPORT-DNAT") && !l.contains("TETHER-DN-"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        jumps(&h.snapshot()),
        jumps(&good),
        "the OUTPUT jump is back"
    );

    // A port another entry names goes to the full conflict check (and is refused).
    let d = h.container("ctr-d");
    let e = h
        .add(&l, &d, ports(json!([tcp(8081, 81)])))
        .expect_err("8081 is b's");
    assert!(e.msg.contains("ctr-b"), "{e:?}");
    tools.take();

    // DEL of TCP mappings: by the entry rules, no save.
    h.del(&l, &b, ports(json!([tcp(8081, 80)]))).expect("DEL b");
    assert_eq!(tools.take(), listed_then_written, "DEL b");
    assert!(portmap_rules(&h.snapshot(), "ctr-b").is_empty());
    assert_tcp_blocked(&o.ns, sa(o.host_v4, 8081));
    assert_tcp(&o.ns, sa(o.host_v4, 8080), "A");
    // DEL of a UDP mapping reads the DNAT targets for the conntrack flush: the full path.
    let u = h.container("ctr-u");
    let udp = ports(json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]));
    h.add(&l, &u, udp.clone()).expect("ADD u");
    tools.take();
    h.del(&l, &u, udp).expect("DEL u");
    assert!(tools.take().contains(&"iptables-save".to_string()));
    assert!(portmap_rules(&h.snapshot(), "ctr-u").is_empty());
    // DEL of an attachment that published nothing: the listing shows no entry, nothing else runs.
    let z = h.container("ctr-z");
    h.add(&l, &z, json!({})).expect("ADD z");
    assert!(tools.take().is_empty(), "ADD without mappings runs nothing");
    h.del(&l, &z, json!({})).expect("DEL z");
    assert_eq!(tools.take(), ["ip6tables", "iptables"], "DEL z");
    for c in [&a, &c] {
        h.del(&l, c, json!({})).expect("DEL");
    }
    let left: Vec<String> = h
        .snapshot()
        .into_iter()
        .filter(|l| l.contains("TETHER-DN-") || l.contains("-A TETHER-HOSTPORT-DNAT "))
        .collect();
    assert!(left.is_empty(), "{left:#?}");
}

#[test]
fn udp_follows_a_replaced_container() {
    let h = host();
    let o = h.add_outside();
    let outside = &o.ns;
    let l = list(&h, "pmnet", "1.0.0");
    let caps = ports(json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]));
    let client = udp_client(outside, sa(o.outside_v4, 40000));
    let to = sa(o.host_v4, 5353);

    let a = h.container("ctr-a");
    let ra = h.add(&l, &a, caps.clone()).expect("ADD a");
    let echo_a = Echo::start(&a.ns, 53, "A");
    assert_eq!(udp_ask(&client, to, "1").as_deref(), Some("A:1"));
    h.del(&l, &a, caps.clone()).expect("DEL a");
    drop(echo_a);
    drop(a);

    let b = h.container("ctr-b");
    let rb = h.add(&l, &b, caps.clone()).expect("ADD b");
    assert_ne!(
        addr_of(&ra, false),
        addr_of(&rb, false),
        "the test needs the replacement on a new address"
    );
    let _echo_b = Echo::start(&b.ns, 53, "B");
    // Same client socket, same 5-tuple: only a flushed conntrack entry lets this reach B.
    assert_eq!(udp_ask(&client, to, "2").as_deref(), Some("B:2"));
    h.del(&l, &b, caps).expect("DEL b");
}

#[test]
fn udp_published_while_a_client_is_sending() {
    // plugins#123: a client sending before the port is published leaves an un-NATed conntrack
    // entry that would swallow its later packets; ADD must flush it.
    let h = host();
    let o = h.add_outside();
    let outside = &o.ns;
    let l = list(&h, "pmnet", "1.0.0");
    let caps = ports(json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]));
    // Another container first: its NAT rules make the host track connections, as any real
    // host with a bridge network does.
    // Kept alive (a dropped namespace takes its veth, and with the network's last attachment
    // the bridge's masquerading, with it).
    let z = h.container("ctr-z");
    h.add(&l, &z, json!({})).expect("ADD z");
    let client = udp_client(outside, sa(o.outside_v4, 40001));
    let to = sa(o.host_v4, 5353);
    assert_eq!(udp_ask(&client, to, "early"), None, "nothing published yet");
    let a = h.container("ctr-a");
    h.add(&l, &a, caps.clone()).expect("ADD");
    let _echo = Echo::start(&a.ns, 53, "A");
    assert_eq!(udp_ask(&client, to, "1").as_deref(), Some("A:1"));
    h.del(&l, &a, caps).expect("DEL");
}

/// Sends to `127.0.0.1` through `via` from `ns`, as an attacker who controls that machine can:
/// a policy route ahead of the `local` table and `route_localnet` on its own interface (so its
/// kernel sends to, and accepts replies from, 127.0.0.1 on a real link).
fn route_localhost_via(ns: &netns_fixtures::Netns, via: &str, dev: &str) {
    ns.sh("ip", &["rule", "add", "pref", "100", "lookup", "local"]);
    ns.sh("ip", &["rule", "del", "pref", "0"]);
    ns.sh(
        "ip",
        &[
            "rule",
            "add",
            "pref",
            "10",
            "to",
            "127.0.0.1/32",
            "lookup",
            "100",
        ],
    );
    ns.sh(
        "ip",
        &[
            "route",
            "add",
            "127.0.0.1/32",
            "via",
            via,
            "dev",
            dev,
            "table",
            "100",
        ],
    );
    ns.sh(
        "sysctl",
        &["-qw", &format!("net.ipv4.conf.{dev}.route_localnet=1")],
    );
}

#[test]
fn forged_localhost_packets_are_dropped() {
    let h = host();
    let o = h.add_outside();
    let outside = &o.ns;
    let l = list(&h, "pmnet", "1.0.0");
    let a = h.container("ctr-a");
    let b = h.container("ctr-b");
    // Published on localhost only (like `-p 127.0.0.1:8081:80`).
    let caps = ports(json!([{"hostPort": 8081, "containerPort": 80, "hostIP": "127.0.0.1"}]));
    let ra = h.add(&l, &a, caps.clone()).expect("ADD a");
    h.add(&l, &b, json!({})).expect("ADD b");
    let _echo = Echo::start(&a.ns, 80, "A");
    // A service of the host bound to localhost only.
    let _host_service = Echo::start(&h.host, 9999, "HOST");
    let localhost = ip("127.0.0.1");

    // The legitimate uses work with the guard in place.
    assert_tcp(&h.host, sa(localhost, 8081), "A");
    assert_tcp(&h.host, sa(localhost, 9999), "HOST");
    assert_tcp_blocked(outside, sa(o.host_v4, 8081));

    // A LAN neighbour forging packets to 127.0.0.1:8081 (they would be DNAT-ed to the container)
    // and a container forging them to the host's localhost service through the bridge, where
    // portmap enabled route_localnet.
    route_localhost_via(outside, &o.host_v4.to_string(), "eth0");
    route_localhost_via(&b.ns, &gateway_of(&ra, false).to_string(), "eth0");
    assert_tcp_blocked(outside, sa(localhost, 8081));
    assert_tcp_blocked(&b.ns, sa(localhost, 9999));
    assert_tcp_blocked(&b.ns, sa(localhost, 8081));

    // Control: without the guard both attacks succeed, so the checks above can fail.
    h.host
        .sh("iptables", &["-t", "raw", "-F", "TETHER-LOCALNET-GUARD"]);
    assert_tcp(outside, sa(localhost, 8081), "A");
    assert_tcp(&b.ns, sa(localhost, 9999), "HOST");
}

#[test]
fn a_taken_host_port_is_refused_and_the_holder_keeps_it() {
    let h = host();
    let o = h.add_outside();
    let outside = &o.ns;
    let l = list(&h, "pmnet", "1.0.0");
    let a = h.container("ctr-a");
    let b = h.container("ctr-b");
    h.add(&l, &a, ports(json!([tcp(8080, 80)]))).expect("ADD a");
    let _echo_a = Echo::start(&a.ns, 80, "A");
    let before = h.snapshot();
    let e = h
        .add(&l, &b, ports(json!([tcp(9000, 90), tcp(8080, 80)])))
        .expect_err("second claim of 8080/tcp");
    assert!(
        e.msg.contains("8080/tcp") && e.msg.contains("ctr-a"),
        "the error names the port and the holder: {e:?}"
    );
    // The failed ADD left nothing behind (the runtime DELs the bridge attachment too).
    assert_eq!(diff(&before, &h.snapshot()), (vec![], vec![]));
    let _echo_b = Echo::start(&b.ns, 80, "B");
    assert_tcp(outside, sa(o.host_v4, 8080), "A");
    assert_tcp_blocked(outside, sa(o.host_v4, 9000));
    // A different host address or protocol is not a conflict.
    let c = h.container("ctr-c");
    h.add(
        &l,
        &c,
        ports(json!([{"hostPort": 8080, "containerPort": 80, "protocol": "udp"}])),
    )
    .expect("8080/udp is free");
}

/// The shared base chains portmap leaves in place once created (documented in the README and
/// `layout`): the DNAT dispatch chain and its jumps, the mark/masquerade chains, the localhost
/// guard, and the raw table that holds it.
fn is_shared_base(line: &str) -> bool {
    let per_container = line.contains("-A TETHER-HOSTPORT-DNAT ") || line.contains("TETHER-DN-");
    let base = [
        "TETHER-HOSTPORT-DNAT",
        "TETHER-HOSTPORT-SETMARK",
        "TETHER-HOSTPORT-MASQ",
        "TETHER-LOCALNET-GUARD",
        // The bridge's per-network masquerade chain (shared, like the bridge).
        "TETHER-MASQ-",
    ]
    .iter()
    .any(|c| line.contains(c));
    let raw_scaffolding = line.starts_with("v4 raw ") && !line.contains("-A ");
    !per_container && (base || raw_scaffolding)
}

enum DelMode {
    WithMappings,
    WithoutMappings,
    AfterRename,
}

fn del_restores_tables(mode: DelMode) {
    let h = host();
    let o = h.add_outside();
    let outside = &o.ns;
    let l = list(&h, "pmnet", "1.0.0");
    // A realistic host: a bridge network already in use, and another container publishing.
    let z = h.container("ctr-z");
    h.add(&l, &z, json!({})).expect("ADD z");
    let before = h.snapshot();
    let b = h.container("ctr-b");
    let caps_b = ports(json!([tcp(9090, 90)]));
    h.add(&l, &b, caps_b.clone()).expect("ADD b");
    let _echo_b = Echo::start(&b.ns, 90, "B");
    let with_b = h.snapshot();

    let a = h.container("ctr-a");
    let caps = ports(json!([
        tcp(8080, 80),
        {"hostPort": 8053, "containerPort": 53, "protocol": "udp"},
        {"hostPort": 8443, "containerPort": 443, "hostIP": "127.0.0.1"},
    ]));
    for round in 0..2 {
        h.add(&l, &a, caps.clone()).expect("ADD a");
        let added = h.snapshot();
        assert!(
            !portmap_rules(&added, "ctr-a").is_empty(),
            "ADD wrote rules for ctr-a"
        );
        match mode {
            DelMode::WithMappings => h.del(&l, &a, caps.clone()).expect("DEL"),
            DelMode::WithoutMappings => h.del(&l, &a, json!({})).expect("DEL without mappings"),
            DelMode::AfterRename => {
                // The network was renamed: DEL comes with the new name, and (no cache entry
                // under that name) without prevResult. Only portmap runs, so that what remains
                // is portmap's doing; then the bridge attachment is removed under the old name.
                let renamed = cni::runtime::ConfList::from_bytes(
                    json!({"cniVersion": "1.0.0", "name": "pmnet-renamed", "plugins": [
                        {"type": "portmap", "capabilities": {"portMappings": true}}]})
                    .to_string()
                    .as_bytes(),
                )
                .unwrap();
                h.del(&renamed, &a, caps.clone()).expect("DEL after rename");
                let after = h.snapshot();
                let left = portmap_rules(&after, "ctr-a");
                assert!(left.is_empty(), "portmap left rules of ctr-a: {left:#?}");
                h.del(&l, &a, json!({})).expect("DEL bridge");
            }
        }
        let after = h.snapshot();
        // B is untouched and still reachable.
        let (gone_b, _) = diff(&with_b, &after);
        assert!(
            gone_b.is_empty(),
            "DEL of a removed other rules: {gone_b:#?}"
        );
        assert_tcp(outside, sa(o.host_v4, 9090), "B");
        assert_tcp_blocked(outside, sa(o.host_v4, 8080));
        let (gone, new) = diff(&before, &after);
        assert!(gone.is_empty(), "round {round}: lost {gone:#?}");
        let unexpected: Vec<&String> = new
            .iter()
            .filter(|l| !is_shared_base(l) && !with_b.contains(l))
            .collect();
        assert!(
            unexpected.is_empty(),
            "round {round}: left behind {unexpected:#?}"
        );
    }
    h.del(&l, &b, caps_b).expect("DEL b");
    let (gone, new) = diff(&before, &h.snapshot());
    assert!(gone.is_empty(), "{gone:#?}");
    let unexpected: Vec<&String> = new.iter().filter(|l| !is_shared_base(l)).collect();
    assert!(unexpected.is_empty(), "left behind {unexpected:#?}");
    eprintln!("shared base left in place: {new:#?}");
}

#[test]
fn del_with_mappings_restores_tables() {
    del_restores_tables(DelMode::WithMappings);
}

#[test]
fn del_without_mappings_restores_tables() {
    del_restores_tables(DelMode::WithoutMappings);
}

#[test]
fn del_after_network_rename_restores_tables() {
    del_restores_tables(DelMode::AfterRename);
}

#[test]
fn gc_removes_only_stale_attachments_of_its_network() {
    let h = host();
    let o = h.add_outside();
    let outside = &o.ns;
    let l = list(&h, "pmnet", "1.0.0");
    let (a, b, c) = (
        h.container("ctr-a"),
        h.container("ctr-b"),
        h.container("ctr-c"),
    );
    h.add(&l, &a, ports(json!([tcp(8080, 80)]))).expect("ADD a");
    h.add(&l, &b, ports(json!([tcp(8081, 80)]))).expect("ADD b");
    h.add(&l, &c, ports(json!([tcp(8082, 80)]))).expect("ADD c");
    let _echo: Vec<Echo> = [&a, &b, &c]
        .iter()
        .map(|x| Echo::start(&x.ns, 80, &x.id))
        .collect();
    // An empty per-attachment chain nobody jumps to (an interrupted ADD of an older version).
    h.host.sh(
        "iptables",
        &["-t", "nat", "-N", "TETHER-DN-0123456789abcdef"],
    );
    let gc = |name: &str, valid: &[&Container]| {
        let valid: Vec<Value> = valid
            .iter()
            .map(|x| json!({"containerID": x.id, "ifname": "eth0"}))
            .collect();
        let conf = json!({"cniVersion": "1.1.0", "name": name, "type": "portmap",
                          "cni.dev/valid-attachments": valid});
        h.exec(std::path::Path::new(PORTMAP), "GC", None, &conf)
            .expect("GC")
    };
    // Another network's GC with an empty valid list touches nothing of pmnet.
    gc("othernet", &[]);
    for x in [&a, &b, &c] {
        assert!(!portmap_rules(&h.snapshot(), &x.id).is_empty());
    }
    gc("pmnet", &[&a, &c]);
    let snap = h.snapshot();
    assert!(portmap_rules(&snap, "ctr-b").is_empty(), "b's rules stay");
    assert!(
        !snap
            .iter()
            .any(|l| l.contains("TETHER-DN-0123456789abcdef"))
    );
    assert_tcp(outside, sa(o.host_v4, 8080), "ctr-a");
    assert_tcp_blocked(outside, sa(o.host_v4, 8081));
    assert_tcp(outside, sa(o.host_v4, 8082), "ctr-c");
}

#[test]
fn check_notices_missing_rules() {
    let h = host();
    let l = list(&h, "pmnet", "1.0.0");
    let a = h.container("ctr-a");
    let caps = ports(json!([tcp(8080, 80)]));
    h.add(&l, &a, caps.clone()).expect("ADD");
    h.check(&l, &a, caps.clone()).expect("CHECK after ADD");
    // Remove the IPv6 DNAT rule behind the entry rule.
    let nat6 = h.save(true, "nat");
    let dnat = nat6
        .lines()
        .find(|l| l.starts_with("-A TETHER-DN-") && l.contains("-j DNAT"))
        .expect("a v6 DNAT rule");
    let chain = dnat.split_whitespace().nth(1).unwrap();
    h.host.sh("ip6tables", &["-t", "nat", "-F", chain]);
    let e = h.check(&l, &a, caps.clone()).expect_err("CHECK must fail");
    assert!(e.msg.contains("DNAT") && e.msg.contains("8080"), "{e:?}");
    // A new ADD of the attachment writes everything again.
    h.del(&l, &a, caps.clone()).expect("DEL");
    h.add(&l, &a, caps.clone()).expect("re-ADD");
    h.check(&l, &a, caps).expect("CHECK after re-ADD");
}

#[test]
fn no_mappings_means_no_rules_and_a_passthrough_result() {
    let h = host();
    let l = list(&h, "pmnet", "0.4.0");
    let before = h.snapshot();
    let a = h.container("ctr-a");
    let r = h.add(&l, &a, json!({})).expect("ADD");
    assert_eq!(r.ips.len(), 2, "prevResult passed through: {r:?}");
    let after = h.snapshot();
    let (_, new) = diff(&before, &after);
    assert!(
        !new.iter().any(|l| l.contains("TETHER-HOSTPORT")
            || l.contains("TETHER-DN-")
            || l.contains("TETHER-LOCALNET")),
        "portmap wrote rules without mappings: {new:#?}"
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// ADD/DEL latency of bridge + portmap, ours against the reference, in one run. A benchmark,
/// not a check: `cargo test -p tether-portmap --release --test portmap -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_add_del_against_reference() {
    const N: usize = 20;
    let caps =
        ports(json!([tcp(8080, 80), {"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]));
    for which in [Impl::Reference, Impl::Tether, Impl::Reference, Impl::Tether] {
        let h = Host::with_iface(which, Some(which), &[("portmap", PORTMAP)]);
        let l = list(&h, "pmnet", "1.0.0");
        // Like a busy host: other containers already publish ports.
        let others: Vec<Container> = (0..10).map(|i| h.container(&format!("other{i}"))).collect();
        for (i, o) in others.iter().enumerate() {
            h.add(&l, o, ports(json!([tcp(10000 + i as u16, 80)])))
                .expect("ADD other");
        }
        let a = h.container("ctr-a");
        let (mut add, mut del, mut pm_add, mut pm_del) = (vec![], vec![], vec![], vec![]);
        for _ in 0..N {
            let t = std::time::Instant::now();
            h.add(&l, &a, caps.clone()).expect("ADD");
            add.push(t.elapsed());
            let t = std::time::Instant::now();
            h.del(&l, &a, caps.clone()).expect("DEL");
            del.push(t.elapsed());
        }
        // portmap alone, with the bridge result as prevResult.
        let r = h.add(&l, &a, caps.clone()).expect("ADD");
        let bin = h.invoker.cni_path[0].join("portmap");
        let conf = json!({"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap",
                              "runtimeConfig": caps.clone(), "prevResult": r.to_json("1.0.0")});
        for _ in 0..N {
            let t = std::time::Instant::now();
            h.exec(&bin, "ADD", Some(&a), &conf).expect("portmap ADD");
            pm_add.push(t.elapsed());
            let t = std::time::Instant::now();
            h.exec(&bin, "DEL", Some(&a), &conf).expect("portmap DEL");
            pm_del.push(t.elapsed());
        }
        eprintln!(
            "{which:?}: bridge+portmap ADD {:?} DEL {:?}; portmap alone ADD {:?} DEL {:?} (medians of {N})",
            median(add),
            median(del),
            median(pm_add),
            median(pm_del)
        );
    }
}

#[test]
fn parallel_adds_and_dels_on_one_host() {
    let h = host();
    let o = h.add_outside();
    let l = list(&h, "pmnet", "1.0.0");
    // Warm host: the bridge exists (the reference bridge races on its own creation). The warm
    // container stays alive throughout, so the network keeps its bridge and masquerading.
    let warm = h.container("ctr-warm");
    h.add(&l, &warm, json!({})).expect("ADD warm");
    let before = h.snapshot();
    let ctrs: Vec<Container> = (0..8).map(|i| h.container(&format!("ctr-{i}"))).collect();
    let caps = |i: usize| ports(json!([tcp(8000 + i as u16, 80)]));
    std::thread::scope(|s| {
        for (i, c) in ctrs.iter().enumerate() {
            let (h, l) = (&h, &l);
            s.spawn(move || h.add(l, c, caps(i)).expect("parallel ADD"));
        }
    });
    // Two more race for one port: exactly one wins.
    let racers: Vec<Container> = (0..2).map(|i| h.container(&format!("racer-{i}"))).collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = racers
            .iter()
            .map(|c| {
                let (h, l) = (&h, &l);
                s.spawn(move || h.add(l, c, ports(json!([tcp(7777, 80)]))))
            })
            .collect();
        hs.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let snap = h.snapshot();
    let entries = snap
        .iter()
        .filter(|l| l.starts_with("v4 nat -A TETHER-HOSTPORT-DNAT "))
        .count();
    assert_eq!(entries, 9, "one entry rule per published container");
    for base in [
        "-A PREROUTING -m addrtype",
        "-A OUTPUT -m addrtype",
        "-j TETHER-HOSTPORT-MASQ",
    ] {
        let n = snap
            .iter()
            .filter(|l| l.starts_with("v4 nat ") && l.contains(base))
            .count();
        assert_eq!(n, 1, "shared jump {base} added once");
    }
    let _echo: Vec<Echo> = ctrs.iter().map(|c| Echo::start(&c.ns, 80, &c.id)).collect();
    for (i, c) in ctrs.iter().enumerate() {
        assert_tcp(&o.ns, sa(o.host_v4, 8000 + i as u16), &c.id);
    }
    std::thread::scope(|s| {
        for (i, c) in ctrs.iter().enumerate().chain(racers.iter().enumerate()) {
            let (h, l) = (&h, &l);
            s.spawn(move || h.del(l, c, caps(i)).expect("parallel DEL"));
        }
    });
    let (gone, new) = diff(&before, &h.snapshot());
    assert!(gone.is_empty(), "{gone:#?}");
    let unexpected: Vec<&String> = new.iter().filter(|l| !is_shared_base(l)).collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
}

/// The reference's keys choose nftables (`ipMasqBackend` on bridge, `backend` on portmap) on a
/// host whose iptables works: everything is published through our `inet tether` table, nothing
/// through iptables, with the same reachability; DEL leaves no element behind.
#[test]
fn backend_nftables_publishes_through_our_table_and_nothing_through_iptables() {
    let h = host();
    let o = h.add_outside();
    let mut l = list(&h, "pmnft", "1.0.0");
    l.plugins[0]["ipMasqBackend"] = json!("nftables");
    l.plugins[1]["backend"] = json!("nftables");
    let a = h.container("ctr-a");
    let b = h.container("ctr-b");
    let caps = ports(json!([tcp(8080, 80)]));
    let ra = h.add(&l, &a, caps.clone()).expect("ADD a");
    h.add(&l, &b, json!({})).expect("ADD b");
    let _echo = Echo::start(&a.ns, 80, "A");
    let gw = gateway_of(&ra, false);
    let table = h.host.sh("nft", &["list", "table", "inet", "tether"]);
    assert!(
        table.contains("tcp . 8080 comment \"tether net=pmnft id=ctr-a"),
        "{table}"
    );
    let ipt = h.host.sh("iptables-save", &[]);
    assert!(
        !ipt.contains("8080") && !ipt.contains("TETHER-MASQ"),
        "{ipt}"
    );
    assert_tcp(&o.ns, sa(o.host_v4, 8080), "A");
    assert_tcp(&h.host, sa(ip("127.0.0.1"), 8080), "A");
    assert_tcp(&h.host, sa(gw, 8080), "A");
    assert_tcp(&a.ns, sa(o.host_v4, 8080), "A");
    assert_tcp(&b.ns, sa(gw, 8080), "A");
    settle_ipv6(&h.host);
    settle_ipv6(&a.ns);
    assert_tcp(&o.ns, sa(o.host_v6, 8080), "A");
    h.check(&l, &a, caps.clone()).expect("CHECK");
    // A second container asking for the same host port: a conflict, and nothing half-applied.
    let c = h.container("ctr-c");
    assert!(h.add(&l, &c, caps.clone()).is_err(), "same host port twice");
    h.del(&l, &c, caps.clone()).expect("DEL c");
    h.del(&l, &a, caps.clone()).expect("DEL a");
    h.del(&l, &a, caps).expect("DEL a again");
    h.del(&l, &b, json!({})).expect("DEL b");
    assert_tcp_blocked(&o.ns, sa(o.host_v4, 8080));
    let table = h.host.sh("nft", &["list", "table", "inet", "tether"]);
    assert!(!table.contains("tether net=pmnft"), "{table}");
}
