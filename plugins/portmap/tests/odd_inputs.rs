//! Inputs the reference accepts and portmap once refused (issue 9, defects 2.6 and 2.7): a
//! container address the host has no route to, and interface names full of characters that
//! mean something to a shell or to `iptables-restore`.

mod common;

use cni::runtime::RuntimeConf;
use common::*;
use serde_json::{Value, json};

const PORTMAP: &str = env!("CARGO_BIN_EXE_portmap");

fn host() -> Host {
    Host::new(Impl::Tether, &[("portmap", PORTMAP)])
}

fn ports(maps: Value) -> Value {
    json!({ "portMappings": maps })
}

fn tcp(host_port: u16, container_port: u16) -> Value {
    json!({"hostPort": host_port, "containerPort": container_port, "protocol": "tcp"})
}

/// Lines of `after` that are neither in `before` nor portmap's shared base (which stays once
/// created, as the README says).
fn left_behind(before: &[String], after: &[String]) -> Vec<String> {
    let (gone, new) = diff(before, after);
    assert!(gone.is_empty(), "lost {gone:#?}");
    new.into_iter()
        .filter(|l| {
            let per_container = l.contains("-A TETHER-HOSTPORT-DNAT ") || l.contains("TETHER-DN-");
            let base = [
                "TETHER-HOSTPORT-DNAT",
                "TETHER-HOSTPORT-SETMARK",
                "TETHER-HOSTPORT-MASQ",
                "TETHER-LOCALNET-GUARD",
            ]
            .iter()
            .any(|c| l.contains(c));
            let raw_scaffolding = l.starts_with("v4 raw ") && !l.contains("-A ");
            per_container || !(base || raw_scaffolding)
        })
        .collect()
}

#[test]
fn an_address_without_a_host_route_is_published_and_removed() {
    let h = host();
    let c = h.container("ctr-noroute");
    // The fake host has no route to 192.0.2.0/24 (the reference's case: a prevResult from a
    // plugin that routes differently).
    let probe = h
        .host
        .command("ip")
        .args(["route", "get", "192.0.2.50"])
        .output()
        .expect("run ip");
    assert!(!probe.status.success(), "the test host routes 192.0.2.50");
    let before = h.snapshot();
    let conf = json!({
        "cniVersion": "1.0.0", "name": "pmnet", "type": "portmap",
        "runtimeConfig": ports(json!([tcp(8080, 80)])),
        "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.50/24"}]},
    });
    let bin = std::path::Path::new(PORTMAP);
    h.exec(bin, "ADD", Some(&c), &conf)
        .expect("ADD without a host route (was code 999)");
    let added = h.snapshot();
    assert!(
        added
            .iter()
            .any(|l| l.contains("-j DNAT --to-destination 192.0.2.50:80")),
        "no DNAT rule to the container: {added:#?}"
    );
    h.exec(bin, "CHECK", Some(&c), &conf).expect("CHECK");
    h.exec(bin, "DEL", Some(&c), &conf).expect("DEL");
    let left = left_behind(&before, &h.snapshot());
    assert!(left.is_empty(), "left behind {left:#?}");
}

/// Names the kernel and the bridge plugin accept, each with a character that a shell, the
/// restore tokenizer or iptables-save's quoting treats specially.
const ODD_IFNAMES: [&str; 8] = ["e;x", "e\"x", "e'x", "e$x", "e#x", "e!x", "e\\x", "e`x"];

#[test]
fn interface_names_with_quotes_and_shell_characters_work_through_bridge_portmap_and_firewall() {
    // The whole chain a runtime would run: firewall's per-address rules carry the same comment.
    let firewall = netns_fixtures::plugin("firewall");
    let firewall = firewall.to_str().expect("a UTF-8 target dir");
    let h = Host::new(
        Impl::Tether,
        &[("portmap", PORTMAP), ("firewall", firewall)],
    );
    let o = h.add_outside();
    let l = conflist(
        "1.0.0",
        "pmnet",
        "cni-pm1",
        &["10.90.0.0/24"],
        &h.dir().join("ipam"),
        vec![
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            json!({"type": "firewall"}),
        ],
    );
    // A network in use already, so that the shared base is part of "before".
    let z = h.container("ctr-z");
    h.add(&l, &z, ports(json!([tcp(9000, 80)]))).expect("ADD z");
    let before = h.snapshot();
    let links = || -> Vec<String> {
        let mut names: Vec<String> = h
            .host
            .ip_json(&["link", "show"])
            .as_array()
            .expect("a list of links")
            .iter()
            .map(|l| l["ifname"].as_str().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names
    };
    let links_before = links();

    let containers: Vec<(Container, RuntimeConf, u16)> = ODD_IFNAMES
        .iter()
        .enumerate()
        .map(|(i, ifname)| {
            let c = h.container(&format!("ctr-odd{i}"));
            let port = 8100 + i as u16;
            let rt = RuntimeConf {
                capability_args: ports(json!([tcp(port, 80)])).as_object().cloned().unwrap(),
                ..c.ns.attachment(&c.id, ifname)
            };
            (c, rt, port)
        })
        .collect();
    let mut echoes = Vec::new();
    for ((c, rt, port), ifname) in containers.iter().zip(ODD_IFNAMES) {
        h.h.add(&l, rt)
            .unwrap_or_else(|e| panic!("ADD with ifname {ifname:?}: {e:?}"));
        let inside = c.ns.sh("ip", &["-o", "link", "show", ifname]);
        assert!(inside.contains(ifname), "{ifname:?} not in the container");
        let comment_of_ours = h
            .snapshot()
            .into_iter()
            .filter(|l| l.contains(&format!("id={} ", c.id)))
            .count();
        // portmap's entry and DNAT chain, firewall's two per-address rules at least.
        assert!(comment_of_ours >= 4, "{ifname:?}: {comment_of_ours} rules");
        h.h.check(&l, rt)
            .unwrap_or_else(|e| panic!("CHECK with ifname {ifname:?}: {e:?}"));
        echoes.push(Echo::start(&c.ns, 80, &c.id));
        assert_tcp(&o.ns, sa(o.host_v4, *port), &c.id);
    }
    // Every comment reads back as written: GC with all of them valid removes nothing.
    let mut valid: Vec<cni::Attachment> = containers
        .iter()
        .zip(ODD_IFNAMES)
        .map(|((c, _, _), ifname)| cni::Attachment {
            container_id: c.id.clone(),
            ifname: ifname.to_string(),
        })
        .collect();
    valid.push(cni::Attachment {
        container_id: z.id.clone(),
        ifname: "eth0".into(),
    });
    let full = h.snapshot();
    h.h.gc(&l, &valid).expect("GC");
    assert_eq!(h.snapshot(), full, "GC removed rules of a valid attachment");

    for ((_, rt, port), ifname) in containers.iter().zip(ODD_IFNAMES) {
        h.h.del(&l, rt)
            .unwrap_or_else(|e| panic!("DEL with ifname {ifname:?}: {e:?}"));
        assert_tcp_blocked(&o.ns, sa(o.host_v4, *port));
    }
    drop(echoes);
    let left = left_behind(&before, &h.snapshot());
    assert!(left.is_empty(), "left behind {left:#?}");
    assert_eq!(links(), links_before, "host links changed");
}
