//! A network's state goes with its last attachment: the last DEL (and GC) removes the network's
//! masquerade chains and the bridge this plugin created, never a bridge it did not create; and
//! what one attachment's DEL or failed ADD does never reaches another container.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use netns_fixtures::{EchoServer, Netns, ping, tcp_echo};
use serde_json::{Value, json};

/// A gateway network with masquerading named `name` on bridge `bridge`.
fn net_conf(env: &Env, name: &str, bridge: &str, subnets: &[&str]) -> Value {
    let mut c = env.gw_conf(subnets);
    // 1.1.0: GC needs it.
    c["cniVersion"] = json!("1.1.0");
    c["name"] = json!(name);
    c["bridge"] = json!(bridge);
    c
}

fn masq_lines(env: &Env) -> Vec<String> {
    env.snapshot()
        .iptables
        .into_iter()
        .filter(|l| is_shared_masq(l))
        .collect()
}

/// `ip …` on the test host.
fn ip(env: &Env, args: &[&str]) {
    let out = env.host().command("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// The outside sees `ctr`'s TCP connection from the host's outside address (masqueraded).
#[track_caller]
fn reaches_outside_masqueraded(ctr: &Netns, outside: &netns_fixtures::Outside) {
    let srv = EchoServer::tcp(&outside.ns, SocketAddr::new(outside.outside_v4.into(), 0));
    assert_eq!(tcp_echo(ctr, srv.addr(), b"out").unwrap(), b"out");
    assert_eq!(srv.peers()[0].ip(), IpAddr::from(outside.host_v4));
}

#[test]
fn a_users_bridge_and_its_uplink_stay_after_the_last_del() {
    let env = Env::new();
    // The user's br0 with their uplink in it, made before Tether ever ran.
    ip(&env, &["link", "add", "br0", "type", "bridge"]);
    // (A veth stands for the NIC: the test kernel may lack the dummy driver.)
    ip(
        &env,
        &[
            "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p",
        ],
    );
    ip(&env, &["link", "set", "uplink0", "master", "br0", "up"]);
    ip(&env, &["link", "set", "br0", "up"]);
    let before = env.snapshot();
    let conf = net_conf(&env, "usernet", "br0", &["10.80.0.0/24"]);
    let ctr = env.th.container();
    let r = env.add(&ctr, "c1", &conf).ok();
    assert!(!masq_lines(&env).is_empty());
    env.del(Some(&ctr), "c1", &conf, Some(&r)).ok_empty();
    let br = env.link("br0").expect("the user's bridge stays");
    assert_eq!(env.link("uplink0").unwrap().master, Some(br.index));
    assert_eq!(br.alias, None, "we never mark a bridge we did not create");
    // The network's chains go; the gateway address stays on a bridge we did not create, as
    // with the reference (we cannot tell whether the user had put it there).
    assert!(masq_lines(&env).is_empty());
    let without_br0 = |mut s: netns_fixtures::Snapshot| {
        let mine = |l: &String| l.starts_with("br0 ") || l.contains(" dev br0 ");
        for v in [&mut s.links, &mut s.addrs, &mut s.routes] {
            v.retain(|l| !mine(l));
        }
        s
    };
    assert_nothing_left(&without_br0(before), &without_br0(env.snapshot()));
    let addrs = env.host().netlink().addrs(Some(br.index)).unwrap();
    assert!(addrs.iter().any(|a| a.net.to_string() == "10.80.0.1/24"));
    // GC with nothing valid leaves it too.
    env.gc(&conf, &[]).ok_empty();
    assert!(env.link("br0").is_some());
    assert_eq!(
        env.link("uplink0").unwrap().master,
        Some(env.link("br0").unwrap().index)
    );
}

#[test]
fn our_bridge_stays_while_it_has_a_port_that_is_not_ours() {
    let env = Env::new();
    let before = env.snapshot();
    let conf = net_conf(&env, "withport", "tbr7", &["10.81.0.0/24"]);
    let ctr = env.th.container();
    let r = env.add(&ctr, "c1", &conf).ok();
    let br = env.link("tbr7").unwrap();
    assert_eq!(br.alias.as_deref(), Some("tether-bridge:withport"));
    ip(
        &env,
        &[
            "link", "add", "other0", "type", "veth", "peer", "name", "other0p",
        ],
    );
    ip(&env, &["link", "set", "other0", "master", "tbr7"]);
    env.del(Some(&ctr), "c1", &conf, Some(&r)).ok_empty();
    assert!(
        env.link("tbr7").is_some(),
        "a port is left: the bridge stays"
    );
    assert!(masq_lines(&env).is_empty(), "but the network's chains go");
    // Once the port is gone, GC sweeps the bridge.
    ip(&env, &["link", "del", "other0"]);
    env.gc(&conf, &[]).ok_empty();
    assert_nothing_left(&before, &env.snapshot());
}

#[test]
fn a_stale_del_naming_another_containers_netns_leaves_that_container_intact() {
    let env = Env::new();
    let conf = env.gw_conf(&["10.82.0.0/24", "fd82::/64"]);
    let outside = env.host().add_outside();
    let live = env.th.container();
    let r = env.add(&live, "live", &conf).ok();
    // A stale attachment whose own namespace is another one (its host veth still exists).
    let old = env.th.container();
    env.add(&old, "stale", &conf).ok();
    // A rule and a route of the live container's own, which nobody else may touch either.
    let sh = |args: &[&str]| {
        let out = live.command("ip").args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    sh(&[
        "route",
        "add",
        "192.0.2.0/24",
        "via",
        "10.82.0.1",
        "dev",
        "eth0",
    ]);
    sh(&["rule", "add", "from", "10.82.0.0/24", "table", "100"]);
    let rules = |ns: &Netns| ns.sh("ip", &["rule", "show"]);
    let (live_before, rules_before) = (live.snapshot(&[]), rules(&live));
    reaches_outside_masqueraded(&live, &outside);

    // netns paths are reused: the stale id's DEL arrives with the live container's path, once
    // while the stale attachment still has its host veth and once after.
    for _ in 0..2 {
        env.del_path(Some(&live.path()), "stale", &conf).ok_empty();
        assert_eq!(live.snapshot(&[]), live_before);
        assert_eq!(rules(&live), rules_before);
        env.check(&live, "live", &conf, &r).ok_empty();
        reaches_outside_masqueraded(&live, &outside);
        let gw: IpAddr = "fd82::1".parse().unwrap();
        assert!(ping(&live, gw), "IPv6 to the gateway");
    }
    assert!(
        old.netlink().link_by_name("eth0").unwrap().is_none(),
        "the stale attachment's own pair went, by its id"
    );
    env.del(Some(&live), "live", &conf, Some(&r)).ok_empty();
    assert!(masq_lines(&env).is_empty());
}

#[test]
fn a_failed_add_against_another_networks_bridge_leaves_the_container_as_it_was() {
    let env = Env::new();
    let before = env.snapshot();
    let a = net_conf(&env, "neta", "tbrx", &["10.83.0.0/24"]);
    let b = net_conf(&env, "netb", "tbrx", &["10.84.0.0/24"]);
    let ca = env.th.container();
    let ra = env.add(&ca, "a", &a).ok();
    let cb = env.th.container();
    let (host_before, cb_before) = (env.snapshot(), cb.snapshot(&[]));
    let out = env.add(&cb, "b", &b);
    assert_eq!(out.err_code(), Some(7), "{out}");
    assert_eq!(
        cb.snapshot(&[]),
        cb_before,
        "the failed container's netns is unchanged"
    );
    assert_clean(&host_before, &env.snapshot(), "no-such-bridge");
    env.del(Some(&cb), "b", &b, None).ok_empty();
    env.del(Some(&ca), "a", &a, Some(&ra)).ok_empty();
    assert_nothing_left(&before, &env.snapshot());
}

#[test]
fn two_networks_racing_for_one_bridge_name_leave_the_loser_as_it_was() {
    let env = Env::new();
    let before = env.snapshot();
    let confs = [
        net_conf(&env, "racea", "tbrr", &["10.85.0.0/24"]),
        net_conf(&env, "raceb", "tbrr", &["10.86.0.0/24"]),
    ];
    for round in 0..8 {
        let ctrs = [env.th.container(), env.th.container()];
        let snaps: Vec<_> = ctrs.iter().map(|c| c.snapshot(&[])).collect();
        let outs: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|i| {
                    let (env, c, conf) = (&env, &ctrs[i], &confs[i]);
                    s.spawn(move || env.add(c, &format!("r{round}-{i}"), conf))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<usize> = (0..2).filter(|&i| outs[i].status == 0).collect();
        assert_eq!(won.len(), 1, "round {round}: {outs:?}");
        let lost = 1 - won[0];
        assert_eq!(outs[lost].err_code(), Some(7), "{}", outs[lost]);
        assert_eq!(
            ctrs[lost].snapshot(&[]),
            snaps[lost],
            "round {round}: the loser's netns is unchanged"
        );
        for i in 0..2 {
            env.del(Some(&ctrs[i]), &format!("r{round}-{i}"), &confs[i], None)
                .ok_empty();
        }
        assert_nothing_left(&before, &env.snapshot());
    }
}

#[test]
fn gc_removes_the_network_and_what_vanished_networks_left() {
    let env = Env::new();
    let before = env.snapshot();
    let a = net_conf(&env, "gca", "tbra", &["10.87.0.0/24", "fd87::/64"]);
    let b = net_conf(&env, "gcb", "tbrb", &["10.88.0.0/24"]);
    let (c1, c2, c3) = (env.th.container(), env.th.container(), env.th.container());
    env.add(&c1, "c1", &a).ok();
    env.add(&c2, "c2", &a).ok();
    let r3 = env.add(&c3, "c3", &b).ok();
    // A valid attachment keeps everything of its network.
    env.gc(&a, &[("c2", "eth0")]).ok_empty();
    assert!(env.link("tbra").is_some());
    assert!(masq_lines(&env).iter().any(|l| l.contains("10.87.0.0/24")));
    // Network b vanishes without a DEL: its container's namespace dies with its veth.
    env.host()
        .netlink()
        .del_link_by_name(&host_veth(&r3))
        .unwrap();
    drop(c3);
    // `tether network rm gca`: GC with nothing valid. Both networks' state goes.
    env.gc(&a, &[]).ok_empty();
    assert!(env.link("tbra").is_none() && env.link("tbrb").is_none());
    assert!(masq_lines(&env).is_empty(), "{:#?}", masq_lines(&env));
    // b's lease goes with b's own GC (`tether network prune`).
    env.gc(&b, &[]).ok_empty();
    assert_nothing_left(&before, &env.snapshot());
    drop((c1, c2));
}
