//! ADD: the result in every spec version, and the kernel state behind it.

mod common;

use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tether_netlink::{IFA_F_NODAD, IFA_F_TENTATIVE, RTPROT_BOOT, format_mac};

const VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn result_shape_in_every_version() {
    let env = Env::new();
    for (n, v) in VERSIONS.iter().enumerate() {
        let conf = env.conf(
            v,
            &["10.10.0.0/24", "fd10::/64"],
            json!({ "bridge": "tbr0", "isGateway": true }),
        );
        let ctr = env.th.container();
        let cid = format!("ctr{n}");
        let r = env.add(&ctr, &cid, &conf).ok();
        assert_eq!(r["cniVersion"], *v);
        if *v < "0.3.0" {
            assert_eq!(keys(&r), ["cniVersion", "dns", "ip4", "ip6"], "{v}: {r}");
            assert_eq!(r["ip4"]["gateway"], "10.10.0.1", "{v}: {r}");
            assert!(r["ip4"]["ip"].as_str().unwrap().starts_with("10.10.0."));
            assert!(r["ip6"]["ip"].as_str().unwrap().starts_with("fd10::"));
        } else {
            assert_eq!(
                keys(&r),
                ["cniVersion", "dns", "interfaces", "ips"],
                "{v}: {r}"
            );
            let ifs = r["interfaces"].as_array().unwrap();
            assert_eq!(ifs.len(), 3, "{v}: {r}");
            assert_eq!(ifs[0]["name"], "tbr0");
            assert!(ifs[0].get("sandbox").is_none());
            assert!(ifs[1]["name"].as_str().unwrap().starts_with("veth"));
            assert!(ifs[1].get("sandbox").is_none());
            assert_eq!(ifs[2]["name"], "eth0");
            assert_eq!(ifs[2]["sandbox"], ctr.path().display().to_string());
            for i in ifs {
                assert_eq!(i["mac"].as_str().unwrap().len(), 17, "{v}: {i}");
                assert_eq!(i.get("mtu").is_some(), *v == "1.1.0", "{v}: {i}");
            }
            let ips = r["ips"].as_array().unwrap();
            assert_eq!(ips.len(), 2);
            for ip in ips {
                assert_eq!(ip["interface"], 2, "{v}: {ip}");
                assert_eq!(ip.get("version").is_some(), *v < "1.0.0", "{v}: {ip}");
            }
            assert_eq!(ips[0]["gateway"], "10.10.0.1");
            assert_eq!(ips[1]["gateway"], "fd10::1");
        }
        env.del(Some(&ctr), &cid, &conf, None).ok_empty();
    }
}

#[test]
fn kernel_state_matches_the_result() {
    let env = Env::new();
    let conf = env.gw_conf(&["10.11.0.0/24", "fd11::/64"]);
    let ctr = env.th.container();
    let r = env.add(&ctr, "c1", &conf).ok();
    let h = env.host().netlink();

    let br = env.link("tbr0").expect("bridge");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert!(br.up);
    assert_eq!(r["interfaces"][0]["mac"], format_mac(br.mac.unwrap()));
    let br_addrs: Vec<String> = h
        .addrs(Some(br.index))
        .unwrap()
        .iter()
        .filter(|a| a.scope == 0)
        .map(|a| a.net.to_string())
        .collect();
    assert_eq!(br_addrs, ["10.11.0.1/24", "fd11::1/64"]);

    // The host veth: deterministic name, on the bridge, the container end's peer.
    let want = format!(
        "veth{}",
        &format!("{:x}", Sha256::digest(b"c1\0eth0".as_slice()))[..8]
    );
    assert_eq!(host_veth(&r), want);
    let hv = env.link(&want).expect("host veth");
    assert_eq!(hv.kind.as_deref(), Some("veth"));
    assert_eq!(hv.master, Some(br.index));
    assert!(hv.up);
    assert_eq!(r["interfaces"][1]["mac"], format_mac(hv.mac.unwrap()));
    let d: Value = serde_json::from_slice(
        &env.host()
            .command("ip")
            .args(["-j", "-d", "link", "show", &want])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(d[0]["ifalias"], "tether:testnet:c1:eth0", "{d}");
    // The port has no IPv6 address of its own (no link-local: nothing for the bridge to flood),
    // while the container's eth0 keeps the kernel's link-local like any interface.
    assert_eq!(d[0]["inet6_addr_gen_mode"], "none", "{d}");

    let c = ctr.netlink();
    let eth0 = c
        .link_by_name("eth0")
        .unwrap()
        .expect("eth0 in the container");
    assert_eq!(eth0.kind.as_deref(), Some("veth"));
    assert!(eth0.up);
    assert_eq!(eth0.peer_index, Some(hv.index));
    assert_eq!(hv.peer_index, Some(eth0.index));
    assert_eq!(r["interfaces"][2]["mac"], format_mac(eth0.mac.unwrap()));
    let addrs = c.addrs(Some(eth0.index)).unwrap();
    assert!(
        addrs.iter().any(|a| a.net.to_string().starts_with("fe80:")),
        "eth0 keeps its link-local: {addrs:?}"
    );
    assert_eq!(
        h.addrs(Some(hv.index)).unwrap(),
        [],
        "the host veth has no address"
    );
    for ip in ["10.11.0.2/24", "fd11::2/64"] {
        let a = addrs
            .iter()
            .find(|a| a.net.to_string() == ip)
            .unwrap_or_else(|| panic!("{ip} missing: {addrs:?}"));
        if a.net.is_ipv6() {
            // No DAD: usable immediately, nothing to wait for.
            assert_ne!(a.flags & IFA_F_NODAD, 0, "{a:?}");
            assert_eq!(a.flags & IFA_F_TENTATIVE, 0, "{a:?}");
        }
    }
    // The routes we add carry protocol `boot`, as the reference's do.
    let routes4 = c.routes(false).unwrap();
    assert!(
        routes4.iter().any(|rt| rt.dst.prefix() == 0
            && rt.gw == Some("10.11.0.1".parse().unwrap())
            && rt.oif == Some(eth0.index)
            && rt.protocol == RTPROT_BOOT),
        "{routes4:?}"
    );
    let routes6 = c.routes(true).unwrap();
    assert!(
        routes6.iter().any(|rt| rt.dst.prefix() == 0
            && rt.gw == Some("fd11::1".parse().unwrap())
            && rt.protocol == RTPROT_BOOT),
        "{routes6:?}"
    );
    assert_eq!(
        r["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.11.0.1"}, {"dst": "::/0", "gw": "fd11::1"}])
    );

    // Forwarding is on in the host (it was off in the fresh namespace).
    assert_eq!(env.host().sysctl("net/ipv4/ip_forward"), "1");
    assert_eq!(env.host().sysctl("net/ipv6/conf/all/forwarding"), "1");
    assert_eq!(ctr.sysctl("net/ipv6/conf/eth0/accept_dad"), "0");

    // The bridge MAC is pinned: more ports come and go, it never changes.
    let mac0 = br.mac;
    let ctr2 = env.th.container();
    let r2 = env.add(&ctr2, "c2", &conf).ok();
    assert_eq!(r2["interfaces"][0]["mac"], r["interfaces"][0]["mac"]);
    env.del(Some(&ctr), "c1", &conf, Some(&r)).ok_empty();
    assert_eq!(env.link("tbr0").unwrap().mac, mac0);
    env.del(Some(&ctr2), "c2", &conf, Some(&r2)).ok_empty();
    // The last DEL deletes the bridge that the first ADD created (it used to stay).
    assert!(
        env.link("tbr0").is_none(),
        "our bridge outlived its last port"
    );
}

#[test]
fn link_options() {
    let env = Env::new();
    let conf = env.conf(
        "1.1.0",
        &["10.12.0.0/24"],
        json!({
            "bridge": "tbr1", "mtu": 1400, "hairpinMode": true, "portIsolation": true,
            "runtimeConfig": { "mac": "02:11:22:33:44:55" },
        }),
    );
    let ctr = env.th.container();
    let r = env.add(&ctr, "c1", &conf).ok();
    let br = env.link("tbr1").unwrap();
    assert_eq!(br.mtu, 1400, "a bridge we create gets the MTU");
    let hv = env.link(&host_veth(&r)).unwrap();
    assert_eq!(hv.mtu, 1400);
    let port = hv.bridge_port.expect("bridge port info");
    assert!(port.hairpin && port.isolated, "{port:?}");
    // ADD returned only once the kernel enabled the port: the container can talk at once.
    assert_eq!(port.state, tether_netlink::PortState::Forwarding, "{hv:?}");
    assert!(hv.oper_up, "{hv:?}");
    assert!(!br.promisc);
    let eth0 = ctr.netlink().link_by_name("eth0").unwrap().unwrap();
    assert_eq!(eth0.mtu, 1400);
    assert_eq!(format_mac(eth0.mac.unwrap()), "02:11:22:33:44:55");
    assert_eq!(r["interfaces"][2]["mac"], "02:11:22:33:44:55");
    assert_eq!(r["interfaces"][2]["mtu"], 1400);
    // Without a gateway: no bridge address, no forwarding, no routes in the result.
    assert!(r.get("routes").is_none(), "{r}");
    assert!(
        env.host()
            .netlink()
            .addrs(Some(br.index))
            .unwrap()
            .iter()
            .all(|a| a.scope != 0)
    );
    assert_eq!(env.host().sysctl("net/ipv4/ip_forward"), "0");

    // MAC from CNI_ARGS, promiscuous bridge.
    let conf2 = env.conf(
        "1.0.0",
        &["10.12.0.0/24"],
        json!({ "bridge": "tbr1", "promiscMode": true }),
    );
    let ctr2 = env.th.container();
    let r2 = env
        .host()
        .cni(&env.p.bridge)
        .command("ADD")
        .container_id("c2")
        .netns(ctr2.path())
        .ifname("net1")
        .args("IgnoreUnknown=1;MAC=02:00:00:aa:bb:cc")
        .cni_path(&env.p.cni_path)
        .stdin(&conf2)
        .run()
        .ok();
    assert_eq!(r2["interfaces"][2]["name"], "net1");
    assert_eq!(r2["interfaces"][2]["mac"], "02:00:00:aa:bb:cc");
    assert!(env.link("tbr1").unwrap().promisc);
    assert_eq!(
        env.link("tbr1").unwrap().mtu,
        1400,
        "an existing bridge keeps its MTU"
    );
}

#[test]
fn layer2_only_and_disabled_container_interface() {
    let env = Env::new();
    let conf = json!({ "cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": "l2br" });
    let ctr = env.th.container();
    let r = env.add(&ctr, "c1", &conf).ok();
    assert_eq!(keys(&r), ["cniVersion", "dns", "interfaces"], "{r}");
    let eth0 = ctr.netlink().link_by_name("eth0").unwrap().unwrap();
    assert!(eth0.up);
    assert!(
        ctr.netlink()
            .addrs(Some(eth0.index))
            .unwrap()
            .iter()
            .all(|a| a.scope != 0)
    );
    env.del(Some(&ctr), "c1", &conf, Some(&r)).ok_empty();

    let mut conf = conf;
    conf["disableContainerInterface"] = json!(true);
    let r = env.add(&ctr, "c1", &conf).ok();
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    let eth0 = ctr.netlink().link_by_name("eth0").unwrap().unwrap();
    assert!(
        !eth0.up,
        "disableContainerInterface leaves the container end down"
    );
}

#[test]
fn enabledad_waits_for_dad_instead_of_skipping_it() {
    let env = Env::new();
    let conf = env.conf(
        "1.0.0",
        &["fd13::/64"],
        json!({ "bridge": "tbr3", "isGateway": true, "enabledad": true }),
    );
    let ctr = env.th.container();
    env.add(&ctr, "c1", &conf).ok();
    let c = ctr.netlink();
    let eth0 = c.link_by_name("eth0").unwrap().unwrap();
    let a = c
        .addrs(Some(eth0.index))
        .unwrap()
        .into_iter()
        .find(|a| a.net.to_string() == "fd13::2/64")
        .expect("address");
    assert_eq!(a.flags & IFA_F_NODAD, 0, "DAD requested: {a:?}");
    assert_eq!(
        a.flags & IFA_F_TENTATIVE,
        0,
        "ADD returned before DAD finished: {a:?}"
    );
    assert_eq!(ctr.sysctl("net/ipv6/conf/eth0/accept_dad"), "1");
}

/// A user's bridge running STP moves a new port through Listening and Learning for
/// forward_delay (15 s) before it forwards: ADD does not wait for that.
#[test]
fn add_does_not_wait_out_stp_forward_delay() {
    let env = Env::new();
    let before = env.snapshot();
    env.host().sh(
        "ip",
        &["link", "add", "tbr9", "type", "bridge", "stp_state", "1"],
    );
    let conf = env.conf("1.0.0", &["10.19.0.0/24"], json!({ "bridge": "tbr9" }));
    let ctr = env.th.container();
    let t = std::time::Instant::now();
    let r = env.add(&ctr, "c1", &conf).ok();
    let took = t.elapsed();
    let port = env.link(&host_veth(&r)).unwrap().bridge_port.unwrap();
    assert!(
        matches!(
            port.state,
            tether_netlink::PortState::Listening | tether_netlink::PortState::Learning
        ),
        "{port:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "ADD took {took:?}"
    );
    env.del(Some(&ctr), "c1", &conf, Some(&r)).ok_empty();
    // Not ours: DEL leaves the user's bridge.
    let br = env.link("tbr9").expect("the user's bridge stays");
    env.host().netlink().del_link(br.index).unwrap();
    assert_nothing_left(&before, &env.snapshot());
}
