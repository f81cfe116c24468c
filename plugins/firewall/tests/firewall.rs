//! firewall end to end: real namespaces, real rules, real packets, the real binary chained after
//! a bridge through a conflist.

// The fake-host helpers are shared with the portmap tests.
#[path = "../../portmap/tests/common/mod.rs"]
mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

const FIREWALL: &str = env!("CARGO_BIN_EXE_firewall");

/// The firewall's rules of one container in a snapshot (the filter table only: the bridge's
/// masquerade rules in nat carry the same comment).
fn firewall_rules(snap: &[String], id: &str) -> Vec<String> {
    snap.iter()
        .filter(|l| l.contains(" filter ") && l.contains(&format!("id={id} ")))
        .cloned()
        .collect()
}

fn host(which: Impl) -> Host {
    Host::new(which, &[("firewall", FIREWALL)])
}

/// Network `n` on bridge `cni-fw<n>`, subnets 10.90.<n>.0/24 and fd90:<n>::/64.
fn list(h: &Host, name: &str, n: u8, policy: &str) -> cni::runtime::ConfList {
    list_at(h, "1.0.0", name, n, policy)
}

/// [`list`] at spec version `version`.
fn list_at(h: &Host, version: &str, name: &str, n: u8, policy: &str) -> cni::runtime::ConfList {
    conflist(
        version,
        name,
        &format!("cni-fw{n}"),
        &[&format!("10.90.{n}.0/24"), &format!("fd90:{n}::/64")],
        &h.dir().join("ipam"),
        vec![json!({"type": "firewall", "ingressPolicy": policy})],
    )
}

struct Ctr {
    c: Container,
    v4: std::net::IpAddr,
    v6: std::net::IpAddr,
    _echo: Echo,
}

fn start(h: &Host, l: &cni::runtime::ConfList, id: &str) -> Ctr {
    let c = h.container(id);
    let r = h
        .add(l, &c, json!({}))
        .unwrap_or_else(|e| panic!("ADD {id}: {e:?}"));
    let echo = Echo::start(&c.ns, 80, id);
    settle_ipv6(&c.ns);
    settle_ipv6(&h.host);
    Ctr {
        v4: addr_of(&r, false),
        v6: addr_of(&r, true),
        c,
        _echo: echo,
    }
}

/// Can `from` reach `to`'s echo server over IPv4 and IPv6? Asserts both agree.
fn reaches(from: &Ctr, to: &Ctr) -> bool {
    let v4 = tcp_echo(
        &from.c.ns,
        sa(to.v4, 80),
        "x",
        std::time::Duration::from_millis(1500),
    )
    .is_ok();
    let v6 = tcp_echo(
        &from.c.ns,
        sa(to.v6, 80),
        "x",
        std::time::Duration::from_millis(1500),
    )
    .is_ok();
    assert_eq!(
        v4, v6,
        "IPv4 and IPv6 disagree between {} and {}",
        from.c.id, to.c.id
    );
    v4
}

#[test]
fn isolated_blocks_traffic_within_one_bridge() {
    let h = host(Impl::Tether);
    // Control first: the same bridge with the open policy lets the pair talk.
    let open = list(&h, "fwnet", 1, "open");
    let (a, b) = (start(&h, &open, "ctr-a"), start(&h, &open, "ctr-b"));
    assert!(reaches(&a, &b) && reaches(&b, &a));
    h.del(&open, &a.c, json!({})).unwrap();
    h.del(&open, &b.c, json!({})).unwrap();

    let isolated = list(&h, "fwnet", 1, "isolated");
    let (a, b) = (start(&h, &isolated, "ctr-a"), start(&h, &isolated, "ctr-b"));
    assert!(!reaches(&a, &b), "a reached b on an isolated bridge");
    assert!(!reaches(&b, &a), "b reached a on an isolated bridge");
    // The host (through the gateway) still reaches both.
    assert_tcp(&h.host, sa(a.v4, 80), "ctr-a");
    h.check(&isolated, &a.c, json!({})).expect("CHECK");
}

#[test]
fn same_bridge_blocks_traffic_between_bridges() {
    let h = host(Impl::Tether);
    let (l1, l2) = (
        list(&h, "net1", 1, "same-bridge"),
        list(&h, "net2", 2, "same-bridge"),
    );
    let (a1, a2) = (start(&h, &l1, "ctr-a1"), start(&h, &l1, "ctr-a2"));
    let b1 = start(&h, &l2, "ctr-b1");
    assert!(reaches(&a1, &a2), "same bridge must stay open");
    assert!(!reaches(&a1, &b1), "net1 reached net2");
    assert!(!reaches(&b1, &a1), "net2 reached net1");
    h.check(&l1, &a1.c, json!({})).expect("CHECK");
}

#[test]
fn open_blocks_nothing() {
    let h = host(Impl::Tether);
    let (l1, l2) = (list(&h, "net1", 1, "open"), list(&h, "net2", 2, "open"));
    let (a1, a2) = (start(&h, &l1, "ctr-a1"), start(&h, &l1, "ctr-a2"));
    let b1 = start(&h, &l2, "ctr-b1");
    assert!(reaches(&a1, &a2) && reaches(&a2, &a1));
    assert!(reaches(&a1, &b1) && reaches(&b1, &a1));
}

/// The shared part of the layout that stays once created (documented).
fn is_shared_base(line: &str) -> bool {
    // The bridge's masquerade chain belongs to the network, not to a container, and stays for the
    // next container like the bridge itself.
    if line.contains("TETHER-MASQ-") {
        return true;
    }
    let per_container = line.contains("tether net=");
    let base = ["CNI-FORWARD", "CNI-ADMIN", "CNI-ISOLATION-STAGE-"]
        .iter()
        .any(|c| line.contains(c));
    !per_container && base
}

fn firewall_conf(name: &str, prev: Option<Value>) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": name, "type": "firewall",
                       "ingressPolicy": "same-bridge"});
    if let Some(p) = prev {
        c["prevResult"] = p;
    }
    c
}

#[test]
fn del_without_prev_result_removes_the_rules() {
    let h = host(Impl::Tether);
    let l = list(&h, "fwnet", 1, "same-bridge");
    let z = start(&h, &l, "ctr-z");
    let before = h.snapshot();
    let a = h.container("ctr-a");
    h.add(&l, &a, json!({})).expect("ADD");
    assert!(!firewall_rules(&h.snapshot(), "ctr-a").is_empty());
    // DEL straight to the plugin, without prevResult (a runtime that lost its cache).
    h.exec(
        Path::new(FIREWALL),
        "DEL",
        Some(&a),
        &firewall_conf("fwnet", None),
    )
    .expect("DEL without prevResult");
    let left = firewall_rules(&h.snapshot(), "ctr-a");
    assert!(left.is_empty(), "{left:#?}");
    h.del(&l, &a, json!({})).expect("DEL through the list");
    let (gone, new) = diff(&before, &h.snapshot());
    assert!(gone.is_empty(), "{gone:#?}");
    let unexpected: Vec<&String> = new.iter().filter(|l| !is_shared_base(l)).collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    // z is untouched.
    assert!(!firewall_rules(&h.snapshot(), "ctr-z").is_empty());
    drop(z);
}

#[test]
fn our_del_removes_what_the_reference_added() {
    let h = host(Impl::Reference);
    let l = list(&h, "fwnet", 1, "open");
    let a = h.container("ctr-a");
    let before = h.snapshot();
    let r = h.add(&l, &a, json!({})).expect("ADD by the reference");
    let ip = addr_of(&r, false);
    assert!(
        h.save(false, "filter")
            .contains(&format!("-s {ip}/32 -j ACCEPT"))
    );
    h.exec(
        Path::new(FIREWALL),
        "DEL",
        Some(&a),
        &firewall_conf("fwnet", Some(r.to_json("1.0.0"))),
    )
    .expect("our DEL");
    let after = h.snapshot();
    let (_, new) = diff(&before, &after);
    let left: Vec<&String> = new
        .iter()
        .filter(|l| l.contains(" filter "))
        .filter(|l| l.contains(&ip.to_string()) || l.contains(&addr_of(&r, true).to_string()))
        .collect();
    assert!(left.is_empty(), "{left:#?}");
}

#[test]
fn gc_and_check() {
    let h = host(Impl::Tether);
    let l = list(&h, "fwnet", 1, "open");
    let (a, b) = (start(&h, &l, "ctr-a"), start(&h, &l, "ctr-b"));
    h.check(&l, &b.c, json!({})).expect("CHECK b");
    let conf = json!({"cniVersion": "1.1.0", "name": "fwnet", "type": "firewall",
                      "cni.dev/valid-attachments": [{"containerID": "ctr-a", "ifname": "eth0"}]});
    h.exec(Path::new(FIREWALL), "GC", None, &conf).expect("GC");
    let snap = h.snapshot();
    assert!(!firewall_rules(&snap, "ctr-a").is_empty());
    assert!(firewall_rules(&snap, "ctr-b").is_empty());
    let e = h.check(&l, &b.c, json!({})).expect_err("CHECK b after GC");
    assert!(e.msg.contains("ACCEPT"), "{e:?}");
    h.check(&l, &a.c, json!({})).expect("CHECK a");
}

#[test]
fn versions_and_backends() {
    let h = host(Impl::Tether);
    let out = h
        .exec(
            Path::new(FIREWALL),
            "VERSION",
            None,
            &json!({"cniVersion": "1.0.0"}),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        out["supportedVersions"],
        json!([
            "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"
        ])
    );
    let a = h.container("ctr-a");
    let e = h
        .exec(
            Path::new(FIREWALL),
            "ADD",
            Some(&a),
            &json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall", "backend": "firewalld",
                    "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}}),
        )
        .unwrap_err();
    assert!(e.msg.contains("firewalld"), "{e:?}");
    let e = h
        .exec(
            Path::new(FIREWALL),
            "ADD",
            Some(&a),
            &json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall"}),
        )
        .unwrap_err();
    assert!(e.msg.contains("prevResult"), "{e:?}");
}

/// Old spec versions: ADD gets a `prevResult` in the old format (0.2.0: `ip4`/`ip6`, no
/// interfaces), DEL none at all (runtimes send it from 0.4.0 on), so DEL must find the rules by
/// their comments alone. The result comes back in the version asked for.
#[test]
fn add_and_del_at_old_versions() {
    // 0.2.0 results list no interfaces, so no bridge for an ingress policy: `open` there.
    for (version, policy) in [("0.3.1", "same-bridge"), ("0.2.0", "open")] {
        let h = host(Impl::Tether);
        let l = list_at(&h, version, "fwold", 1, policy);
        let before = h.snapshot();
        let a = start(&h, &l, "ctr-a");
        let b = start(&h, &l, "ctr-b");
        let c = h.container("ctr-c");
        let r = h.add(&l, &c, json!({})).expect("ADD");
        assert_eq!(r.cni_version, version);
        assert!(reaches(&a, &b) && reaches(&b, &a), "{version}");
        let rules = firewall_rules(&h.snapshot(), "ctr-a");
        // One ACCEPT in and one out per address, both families.
        assert_eq!(rules.len(), 4, "{version}: {rules:#?}");
        if policy == "same-bridge" {
            assert!(
                h.save(false, "filter")
                    .contains("-A FORWARD -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\" -j CNI-ISOLATION-STAGE-1"),
                "{version}"
            );
        }
        for c in [&a.c, &b.c, &c] {
            h.del(&l, c, json!({}))
                .unwrap_or_else(|e| panic!("{version}: DEL {}: {e:?}", c.id));
        }
        let (gone, new) = diff(&before, &h.snapshot());
        assert!(gone.is_empty(), "{version}: {gone:#?}");
        let left: Vec<&String> = new.iter().filter(|l| !is_shared_base(l)).collect();
        assert!(left.is_empty(), "{version}: {left:#?}");
    }
}

/// The shared layout, comments included, is the reference's to the letter: the jumps from
/// FORWARD and the isolation chains (the per-address rules differ: ours carry comments).
#[test]
fn shared_rules_are_the_references() {
    let shared = |which: Impl| {
        let h = host(which);
        let l = list(&h, "fwnet", 1, "same-bridge");
        let a = h.container("ctr-a");
        h.add(&l, &a, json!({}))
            .unwrap_or_else(|e| panic!("{which:?} ADD: {e:?}"));
        h.snapshot()
            .into_iter()
            .filter(|l| l.contains(" filter "))
            .filter(|l| l.contains("-A FORWARD ") || l.contains("CNI-ISOLATION-STAGE-"))
            .collect::<Vec<_>>()
    };
    let ours = shared(Impl::Tether);
    assert!(
        ours.iter()
            .any(|l| l.contains("\"CNI firewall plugin rules (ingressPolicy: same-bridge)\"")),
        "{ours:#?}"
    );
    assert_eq!(ours, shared(Impl::Reference));
}

/// Podman's CNI conflist (0.4.0): bridge, portmap, firewall, tuning. Run with our chained plugins
/// and, to show the test is fair, with the reference ones.
fn podman_order(which: Impl) {
    let portmap = netns_fixtures::plugin("portmap");
    let tuning = netns_fixtures::plugin("tuning");
    let h = Host::new(
        which,
        &[
            ("firewall", FIREWALL),
            ("portmap", portmap.to_str().unwrap()),
            ("tuning", tuning.to_str().unwrap()),
        ],
    );
    let o = h.add_outside();
    let l = conflist(
        "0.4.0",
        "podman",
        "cni-podman0",
        &["10.88.0.0/16"],
        &h.dir().join("ipam"),
        vec![
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            json!({"type": "firewall"}),
            json!({"type": "tuning"}),
        ],
    );
    let before = h.snapshot();
    let a = h.container("ctr-a");
    let caps =
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    let r = h.add(&l, &a, caps.clone()).expect("ADD");
    assert_eq!(r.cni_version, "0.4.0");
    let _echo = Echo::start(&a.ns, 80, "A");
    assert_tcp(&o.ns, sa(o.host_v4, 8080), "A");
    // And out: masqueraded by the bridge, let through by the firewall.
    let _far = Echo::start(&o.ns, 9000, "FAR");
    assert_tcp(&a.ns, sa(o.outside_v4, 9000), "FAR");
    if which == Impl::Tether {
        // Not with the reference: portmap 1.1.1's CHECK looks for its chain in the IPv6 nat
        // table of a v4-only network ("could not check ipv6 dnat") and fails.
        h.check(&l, &a, caps.clone()).expect("CHECK");
    }
    h.del(&l, &a, caps).expect("DEL");
    assert_tcp_blocked(&o.ns, sa(o.host_v4, 8080));
    if which == Impl::Tether {
        let (gone, new) = diff(&before, &h.snapshot());
        assert!(gone.is_empty(), "{gone:#?}");
        let left: Vec<&String> = new.iter().filter(|l| l.contains("id=ctr-a")).collect();
        assert!(left.is_empty(), "{left:#?}");
    }
}

#[test]
fn podman_conflist_with_our_plugins() {
    podman_order(Impl::Tether);
}

#[test]
fn podman_conflist_with_reference_plugins() {
    podman_order(Impl::Reference);
}
