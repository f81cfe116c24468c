//! A `prevResult` whose fields are not what they claim (an address without its prefix length, a
//! gateway that is no address, an interface index past the list, ...) is refused by every
//! chained plugin the same way, because they all read it through `cni`: code 7, exactly one
//! error JSON on stdout, and nothing created on the host, in the container or in a data dir.
//!
//! Each plugin gets a config that does change something with a good `prevResult` (the control
//! at the end proves it), so a plugin that took the bad one would show in the snapshots.

mod common;

use common::*;
use netns_fixtures::{CniHost, conflist};
use serde_json::{Value, json};

/// The chained plugins that read `prevResult` on ADD.
const CHAINED: &[&str] = &["portmap", "firewall", "tuning", "bandwidth"];

/// A config of `plugin` that changes the host or the container.
fn config(t: &CniHost, plugin: &str) -> Value {
    let data = t.dir().join(format!("{plugin}-data"));
    match plugin {
        "portmap" => json!({
            "type": "portmap", "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [
                {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}
            ]}
        }),
        "firewall" => json!({"type": "firewall"}),
        "tuning" => json!({
            "type": "tuning", "dataDir": data, "mtu": 1400,
            "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}
        }),
        "bandwidth" => json!({
            "type": "bandwidth", "ingressRate": 1_000_000, "ingressBurst": 100_000,
            "egressRate": 1_000_000, "egressBurst": 100_000
        }),
        other => unreachable!("{other}"),
    }
}

/// A bad `prevResult`: what is wrong, how to make a good one so, and a word its error must
/// contain.
type Corruption = (&'static str, fn(&mut Value), &'static str);

fn corruptions() -> Vec<Corruption> {
    vec![
        (
            "address without prefix",
            |r| r["ips"][0]["address"] = json!("10.68.0.50"),
            "has no prefix length",
        ),
        (
            "prefix out of range",
            |r| r["ips"][0]["address"] = json!("10.68.0.50/33"),
            "prefix length",
        ),
        (
            "gateway not an address",
            |r| r["ips"][0]["gateway"] = json!("10.68.0"),
            "gateway",
        ),
        (
            "gateway of the other family",
            |r| r["ips"][0]["gateway"] = json!("fd00::1"),
            "gateway",
        ),
        (
            "interface index past the list",
            |r| r["ips"][0]["interface"] = json!(7),
            "interface",
        ),
        (
            "route without prefix",
            |r| r["routes"] = json!([{"dst": "0.0.0.0", "gw": "10.68.0.1"}]),
            "routes[0].dst",
        ),
        (
            "malformed MAC",
            |r| r["interfaces"][0]["mac"] = json!("02:42:zz:11:00:02"),
            "mac",
        ),
        (
            "nameserver with a newline",
            |r| r["dns"] = json!({"nameservers": ["10.68.0.1\nnameserver 192.0.2.66"]}),
            "dns.nameservers[0]",
        ),
        (
            "list entry that is no object",
            |r| r["ips"] = json!([["10.68.0.50/24"]]),
            "ips[0]",
        ),
        (
            "not an object",
            |r| *r = json!(["10.68.0.50/24"]),
            "prevResult",
        ),
    ]
}

#[test]
fn every_chained_plugin_refuses_a_malformed_prev_result_and_changes_nothing() {
    let bins: Vec<(&str, std::path::PathBuf)> = CHAINED.iter().map(|p| (*p, plugin(p))).collect();
    let links: Vec<(&str, &std::path::Path)> =
        bins.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let t = CniHost::chained(&links);
    let ctr = t.container();
    let list = conflist("1.0.0", "prevnet", vec![t.bridge_conf("10.68.0.0/24")]);
    let rt = ctr.attachment("c1", "eth0");
    let good = t.add(&list, &rt).expect("bridge ADD").to_json("1.0.0");

    let snapshot = || {
        let dirs: Vec<std::path::PathBuf> = CHAINED
            .iter()
            .map(|p| t.dir().join(format!("{p}-data")))
            .chain([t.ipam_dir()])
            .collect();
        let dirs: Vec<&std::path::Path> = dirs.iter().map(|d| d.as_path()).collect();
        (t.snapshot(&dirs), ctr.snapshot(&[]))
    };
    // `command` (ADD or DEL) of `plugin`'s chained config with `prev` as its prevResult.
    let run = |command: &str, plugin: &str, prev: &Value| {
        let mut conf = config(&t, plugin);
        conf["cniVersion"] = json!("1.0.0");
        conf["name"] = json!("prevnet");
        conf["prevResult"] = prev.clone();
        t.cni(t.bin_dir().join(plugin))
            .command(command)
            .container_id("c1")
            .netns(ctr.path())
            .ifname("eth0")
            .cni_path([t.bin_dir()])
            .stdin(conf)
            .run_checked()
    };
    let arp_filter = ctr.sysctl("net.ipv4.conf.eth0.arp_filter");
    let before = snapshot();
    for p in CHAINED {
        for (what, corrupt, needle) in corruptions() {
            let mut prev = good.clone();
            corrupt(&mut prev);
            let out = run("ADD", p, &prev);
            // `err` asserts a failure whose stdout is exactly one error JSON.
            let e = out.err();
            assert_eq!(e["code"], 7, "{p}, {what}: {out}");
            let msg = e["msg"].as_str().unwrap();
            assert!(
                msg.contains("prevResult") && msg.contains(needle),
                "{p}, {what}: {msg}"
            );
        }
    }
    let after = snapshot();
    assert_snapshot_eq(&before.0, &after.0);
    assert_snapshot_eq(&before.1, &after.1);
    assert_eq!(ctr.sysctl("net.ipv4.conf.eth0.arp_filter"), arp_filter);

    // The control: with the good prevResult each config does change something.
    for p in CHAINED {
        let base = snapshot();
        run("ADD", p, &good).ok();
        assert_ne!(
            snapshot(),
            base,
            "{p} changed nothing with a good prevResult"
        );
        run("DEL", p, &good).ok_empty();
    }
    t.del(&list, &rt).expect("bridge DEL");
}
