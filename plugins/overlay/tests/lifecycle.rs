//! ADD, CHECK, DEL and GC of containers on one host through the real protocol, with a lease
//! written by hand as the agent writes it (and no VXLAN device: the plugin does not need one).

mod common;

use common::*;
use netns_fixtures::ping;
use serde_json::json;

#[test]
fn add_puts_the_container_on_the_host_subnet_behind_tob_bridge_and_del_leaves_nothing() {
    let h = Host::leased();
    let conf = h.conf(json!({}));
    let before = h.snapshot();
    let ctr = h.th.container();
    let r = h.add(&ctr, "c1", &conf).ok();

    // The address comes from the host subnet, the gateway is the bridge tob-<vni>.
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["ips"][0]["address"], "10.200.3.2/24", "{r:#}");
    assert_eq!(r["ips"][0]["gateway"], "10.200.3.1");
    assert_eq!(r["interfaces"][0]["name"], BRIDGE);
    let br = h.link(BRIDGE).expect("bridge tob-42");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(br.mtu, 1450);
    let addrs = h
        .ns()
        .sh("ip", &["-o", "-4", "addr", "show", "dev", BRIDGE]);
    assert!(addrs.contains("10.200.3.1/24"), "{addrs}");
    // MTU and routes inside the container: the whole overlay and the default, via the gateway.
    let eth0 = ctr.netlink().link_by_name("eth0").unwrap().unwrap();
    assert_eq!(eth0.mtu, 1450);
    let routes = ctr.sh("ip", &["-4", "route"]);
    assert!(
        routes.contains("10.200.0.0/16 via 10.200.3.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("default via 10.200.3.1 dev eth0"),
        "{routes}"
    );
    assert!(
        ping(&ctr, "10.200.3.1".parse().unwrap()),
        "gateway unreachable"
    );
    // One record, one lease in the per-host store under the network's directory.
    assert_eq!(h.records(), vec![("c1".to_string(), "eth0".to_string())]);
    assert!(h.dir().ipam_dir().join(NET).join("10.200.3.2").is_file());
    // Masquerading keyed on the whole overlay: -s overlay, RETURN for -d overlay.
    let masq = h.masq_lines();
    assert!(
        masq.iter()
            .any(|l| l.contains("-A POSTROUTING -s 10.200.0.0/16")),
        "{masq:#?}"
    );
    assert!(
        masq.iter()
            .any(|l| l.contains("-d 10.200.0.0/16") && l.contains("RETURN")),
        "{masq:#?}"
    );

    h.check(&ctr, "c1", &conf, &r).ok_empty();
    h.del("c1", &conf, Some(&r)).ok_empty();
    assert!(h.link(BRIDGE).is_none());
    assert!(ctr.netlink().link_by_name("eth0").unwrap().is_none());
    assert_nothing_left(&before, &h.snapshot());
    // DEL twice, and without prevResult.
    h.del("c1", &conf, Some(&r)).ok_empty();
    h.del("c1", &conf, None).ok_empty();
    assert_nothing_left(&before, &h.snapshot());
}

#[test]
fn a_conflist_mtu_below_the_lease_wins_and_the_result_converts_to_older_versions() {
    let h = Host::leased();
    let mut conf = h.conf(json!({"mtu": 1400}));
    conf["cniVersion"] = json!("0.4.0");
    let before = h.snapshot();
    let ctr = h.th.container();
    let r = h.add(&ctr, "c1", &conf).ok();
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(r["ips"][0]["version"], "4", "0.4.0 shape: {r:#}");
    assert_eq!(
        ctr.netlink().link_by_name("eth0").unwrap().unwrap().mtu,
        1400
    );
    h.check(&ctr, "c1", &conf, &r).ok_empty();
    h.del("c1", &conf, Some(&r)).ok_empty();
    assert_nothing_left(&before, &h.snapshot());
}

#[test]
fn without_a_lease_or_a_live_agent_add_is_try_again_later_and_creates_nothing() {
    let h = Host::new();
    let conf = h.conf(json!({}));
    let before = h.snapshot();
    let ctr = h.th.container();
    let out = h.add(&ctr, "c1", &conf);
    assert_eq!(out.err_code(), Some(11), "{out}");
    assert!(out.stdout.contains("no lease"), "{out}");
    let st = h.status(&conf);
    assert_eq!(st.err_code(), Some(50), "{st}");

    // A lease whose agent is gone: still 11.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let mut lease = h.lease("10.200.3.0/24");
    lease.agent_pid = pid;
    h.write_lease(&lease);
    let out = h.add(&ctr, "c1", &conf);
    assert_eq!(out.err_code(), Some(11), "{out}");
    assert!(out.stdout.contains("not running"), "{out}");
    // A lease for another network (a copied file): 11 as well, never its subnet.
    let mut other = h.lease("10.200.3.0/24");
    other.network = "other".into();
    h.write_lease(&other);
    assert_eq!(h.add(&ctr, "c1", &conf).err_code(), Some(11));

    assert!(ctr.netlink().link_by_name("eth0").unwrap().is_none());
    assert!(h.records().is_empty());
    h.dir().remove_lease().unwrap();
    assert_nothing_left(&before, &h.snapshot());
    // With a good lease, STATUS is ready.
    h.write_lease(&h.lease("10.200.3.0/24"));
    h.status(&conf).ok_empty();
}

#[test]
fn del_works_after_the_lease_is_gone() {
    let h = Host::leased();
    let conf = h.conf(json!({}));
    let before = h.snapshot();
    let (c1, c2) = (h.th.container(), h.th.container());
    let r1 = h.add(&c1, "c1", &conf).ok();
    let r2 = h.add(&c2, "c2", &conf).ok();
    assert_eq!(r2["ips"][0]["address"], "10.200.3.3/24");
    // The agent stopped (revoked its lease): DEL needs only the records.
    h.dir().remove_lease().unwrap();
    h.del("c1", &conf, Some(&r1)).ok_empty();
    // Not the last: the masquerading and the bridge stay for c2.
    assert!(!h.masq_lines().is_empty());
    assert!(h.link(BRIDGE).is_some());
    h.del("c2", &conf, None).ok_empty();
    h.del("c2", &conf, None).ok_empty();
    h.write_lease(&h.lease("10.200.3.0/24"));
    assert_nothing_left(&before, &h.snapshot());
}

#[test]
fn check_fails_when_the_lease_no_longer_covers_the_container() {
    let h = Host::leased();
    let conf = h.conf(json!({}));
    let before = h.snapshot();
    let ctr = h.th.container();
    let r = h.add(&ctr, "c1", &conf).ok();
    h.check(&ctr, "c1", &conf, &r).ok_empty();
    // The agent came back with another subnet.
    h.write_lease(&h.lease("10.200.9.0/24"));
    let out = h.check(&ctr, "c1", &conf, &r);
    assert_eq!(out.err_code(), Some(999), "{out}");
    assert!(out.stdout.contains("10.200.9.0/24"), "{out}");
    // No lease at all: try again later.
    h.dir().remove_lease().unwrap();
    assert_eq!(h.check(&ctr, "c1", &conf, &r).err_code(), Some(11));
    // The bridge's own CHECK runs too: the container's address removed by hand is found.
    h.write_lease(&h.lease("10.200.3.0/24"));
    ctr.sh("ip", &["addr", "del", "10.200.3.2/24", "dev", "eth0"]);
    let out = h.check(&ctr, "c1", &conf, &r);
    assert_eq!(out.err_code(), Some(999), "{out}");
    h.del("c1", &conf, Some(&r)).ok_empty();
    assert_nothing_left(&before, &h.snapshot());
}

#[test]
fn gc_removes_only_this_runtimes_stale_attachments() {
    let h = Host::leased();
    let mine = h.conf_named("rt-a", json!({}));
    let theirs = h.conf_named("rt-b", json!({}));
    let before = h.snapshot();
    let (c1, c2, c3) = (h.th.container(), h.th.container(), h.th.container());
    h.add(&c1, "c1", &mine).ok();
    h.add(&c2, "c2", &mine).ok();
    let r3 = h.add(&c3, "c3", &theirs).ok();
    // Runtime A still knows c1 only: c2 is stale; c3 is runtime B's and stays.
    h.gc(&mine, &["c1"]).ok_empty();
    let left: Vec<String> = h.records().into_iter().map(|(c, _)| c).collect();
    assert_eq!(left, ["c1", "c3"]);
    assert!(c2.netlink().link_by_name("eth0").unwrap().is_none());
    assert!(c3.netlink().link_by_name("eth0").unwrap().is_some());
    assert!(!h.dir().ipam_dir().join(NET).join("10.200.3.3").exists());
    assert!(h.dir().ipam_dir().join(NET).join("10.200.3.4").exists());
    h.check(&c3, "c3", &theirs, &r3).ok_empty();
    // Nothing valid any more for either: everything goes, masquerading with the last.
    h.gc(&mine, &[]).ok_empty();
    h.gc(&theirs, &[]).ok_empty();
    assert!(h.records().is_empty());
    assert_nothing_left(&before, &h.snapshot());
}

#[test]
fn masquerading_flushed_behind_our_back_is_reported_by_check_and_repaired_by_gc() {
    let h = Host::leased();
    let conf = h.conf(json!({}));
    let before = h.snapshot();
    let (c1, c2) = (h.th.container(), h.th.container());
    let r1 = h.add(&c1, "c1", &conf).ok();
    // A firewall reload drops our POSTROUTING jump.
    h.ns().sh("iptables", &["-t", "nat", "-F", "POSTROUTING"]);
    // Later ADDs trust the chain the first one made (no iptables exec on their path)...
    let r2 = h.add(&c2, "c2", &conf).ok();
    assert!(
        !h.masq_lines()
            .iter()
            .any(|l| l.starts_with("-A POSTROUTING")),
        "{:#?}",
        h.masq_lines()
    );
    // ...CHECK reports the difference, GC (as `tether network prune` sends) repairs it.
    let out = h.check(&c1, "c1", &conf, &r1);
    assert_eq!(out.err_code(), Some(999), "{out}");
    h.gc(&conf, &["c1", "c2"]).ok_empty();
    h.check(&c1, "c1", &conf, &r1).ok_empty();
    h.check(&c2, "c2", &conf, &r2).ok_empty();
    h.del("c1", &conf, Some(&r1)).ok_empty();
    h.del("c2", &conf, Some(&r2)).ok_empty();
    assert_nothing_left(&before, &h.snapshot());
}
