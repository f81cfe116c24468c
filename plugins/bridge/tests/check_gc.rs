//! CHECK (every object ADD created), STATUS (delegated to the IPAM) and GC (which the reference
//! does not have).

mod common;

use common::*;
use netns_fixtures::Netns;
use serde_json::{Value, json};

fn conf11(env: &Env, subnets: &[&str]) -> Value {
    env.conf(
        "1.1.0",
        subnets,
        json!({ "bridge": "tbr0", "isDefaultGateway": true, "ipMasq": true }),
    )
}

/// `iptables-save -t nat` in the host, without its dated comments and chain counters.
fn nat(env: &Env) -> String {
    let out = env
        .host()
        .command("iptables-save")
        .args(["-t", "nat"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => format!("{}\n", &l[..i]),
            _ => format!("{l}\n"),
        })
        .collect()
}

/// The network's IPv4 masquerade chain, from its `POSTROUTING` jump.
fn masq_chain(env: &Env) -> String {
    let text = nat(env);
    text.lines()
        .find(|l| l.starts_with("-A POSTROUTING") && l.contains(&format!("tether net={NET} masq")))
        .and_then(|l| l.rsplit(" -j ").next())
        .unwrap_or_else(|| panic!("no masquerade jump for {NET}:\n{text}"))
        .to_string()
}

fn ip(ns: &Netns, args: &str) {
    // Netns::sh panics with the stderr unless the command succeeds.
    ns.sh("ip", &args.split_whitespace().collect::<Vec<_>>());
}

#[test]
fn check_passes_after_add_and_fails_for_each_missing_object() {
    let env = Env::new();
    let conf = conf11(&env, &["10.40.0.0/24", "fd40::/64"]);

    // (what we break, how) -> CHECK must fail and name it.
    type Breaker = fn(&Env, &Netns, &Value);
    let breakers: &[(&str, Breaker)] = &[
        ("does not exist", |_, ctr, _| ip(ctr, "link del eth0")),
        ("masquerade", |env, _, _| {
            // Remove the network's shared IPv4 chain and every jump to it (the next round's ADD
            // creates it again).
            let chain = masq_chain(env);
            let script = format!(
                "iptables -t nat -S POSTROUTING | grep -- '-j {chain}' | sed 's/^-A/-D/' \
                 | while read -r rule; do eval iptables -t nat $rule; done; \
                 iptables -t nat -F {chain} && iptables -t nat -X {chain}"
            );
            let o = env
                .host()
                .command("sh")
                .args(["-c", &script])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert!(!nat(env).contains(&chain));
        }),
        ("10.40.0.", |_, ctr, _| {
            let o = ctr
                .command("ip")
                .args(["-4", "addr", "flush", "dev", "eth0"])
                .output()
                .unwrap();
            assert!(o.status.success());
        }),
        ("route", |_, ctr, _| ip(ctr, "-6 route del default")),
        ("gateway address", |env, _, _| {
            ip(env.host(), "addr del 10.40.0.1/24 dev tbr0")
        }),
        ("not attached", |env, _, r| {
            ip(env.host(), &format!("link set {} nomaster", host_veth(r)))
        }),
        ("MAC", |_, ctr, _| {
            ip(ctr, "link set eth0 address 02:00:00:00:00:99")
        }),
    ];
    let healthy = env.th.container();
    let rh = env.add(&healthy, "healthy", &conf).ok();
    for (what, brk) in breakers {
        let ctr = env.th.container();
        let r = env.add(&ctr, "victim", &conf).ok();
        env.check(&ctr, "victim", &conf, &r).ok_empty();
        brk(&env, &ctr, &r);
        let out = env.check(&ctr, "victim", &conf, &r);
        assert_ne!(out.status, 0, "CHECK passed after breaking {what}:\n{out}");
        assert!(out.stdout.contains(what), "breaking {what}: {out}");
        env.del(Some(&ctr), "victim", &conf, Some(&r)).ok_empty();
        // Re-add what was shared, for the next round.
        if *what == "gateway address" {
            ip(env.host(), "addr add 10.40.0.1/24 dev tbr0");
        }
    }
    env.check(&healthy, "healthy", &conf, &rh).ok_empty();
}

/// Interface indexes are per namespace, so the container end can have the host end's index:
/// each is still the other's peer, and CHECK must say so.
#[test]
fn check_passes_when_both_veth_ends_have_the_same_index() {
    let env = Env::new();
    let conf = conf11(&env, &["10.44.0.0/24"]);
    let ctr = env.th.container();
    // In the fresh host the bridge becomes link 2 and the host veth 3; one link more in the
    // container (lo is 1) makes its eth0 3 too.
    ctr.netlink().create_bridge("pad0", None, false).unwrap();
    let r = env.add(&ctr, "c1", &conf).ok();
    let hv = env.link(&host_veth(&r)).expect("host veth");
    let eth0 = ctr.netlink().link_by_name("eth0").unwrap().expect("eth0");
    assert_eq!(hv.index, eth0.index, "the test needs equal indexes");
    assert_eq!(
        (hv.peer_index, eth0.peer_index),
        (Some(eth0.index), Some(hv.index))
    );
    env.check(&ctr, "c1", &conf, &r).ok_empty();
    env.del(Some(&ctr), "c1", &conf, Some(&r)).ok_empty();
}

#[test]
fn check_needs_040_and_a_prev_result() {
    let env = Env::new();
    let conf = env.conf("0.3.1", &["10.41.0.0/24"], json!({ "bridge": "tbr0" }));
    let ctr = env.th.container();
    let r = env.add(&ctr, "c1", &conf).ok();
    assert_eq!(env.check(&ctr, "c1", &conf, &r).err_code(), Some(1));
    let mut conf = conf;
    conf["cniVersion"] = json!("1.0.0");
    let out = env
        .host()
        .cni(&env.p.bridge)
        .command("CHECK")
        .container_id("c1")
        .netns(ctr.path())
        .ifname("eth0")
        .cni_path(&env.p.cni_path)
        .stdin(&conf)
        .run();
    assert_eq!(out.err_code(), Some(7), "{out}");
    assert!(out.stdout.contains("prevResult"), "{out}");
}

#[test]
fn status_is_the_ipam_status() {
    let env = Env::new();
    let conf = conf11(&env, &["10.42.0.0/30"]);
    env.status(&conf).ok_empty();
    let ctr = env.th.container();
    env.add(&ctr, "c1", &conf).ok();
    // A /30 has one address besides the gateway: the pool is now exhausted.
    let out = env.status(&conf);
    assert_eq!(out.err_code(), Some(50), "{out}");
    // L2-only: nothing to ask.
    env.status(&json!({"cniVersion": "1.1.0", "name": NET, "type": "bridge"}))
        .ok_empty();
}

#[test]
fn gc_removes_exactly_the_stale_attachments() {
    let env = Env::new();
    let conf = conf11(&env, &["10.43.0.0/24", "fd43::/64"]);
    let ctrs: Vec<Netns> = (0..3).map(|_| env.th.container()).collect();
    let results: Vec<Value> = ["a", "b", "c"]
        .iter()
        .zip(&ctrs)
        .map(|(cid, ctr)| env.add(ctr, cid, &conf).ok())
        .collect();
    // Container "a" is also on another network sharing the bridge: this network's GC must not
    // touch that attachment.
    let mut other = env.conf(
        "1.1.0",
        &["10.44.0.0/24"],
        json!({ "bridge": "tbr0", "ipMasq": true }),
    );
    other["name"] = json!("othernet");
    let octr = &ctrs[0];
    let ro = env.add_if(octr, "a", "eth1", &other).ok();

    // Without a valid list nothing is known to be stale: nothing is removed.
    let mut no_list = conf.clone();
    no_list["cni.dev/valid-attachments"] = Value::Null;
    env.host()
        .cni(&env.p.bridge)
        .command("GC")
        .cni_path(&env.p.cni_path)
        .stdin(&no_list)
        .run()
        .ok_empty();
    for (cid, (ctr, r)) in ["a", "b", "c"].iter().zip(ctrs.iter().zip(&results)) {
        env.check(ctr, cid, &conf, r).ok_empty();
    }

    let lease = |ip: std::net::IpAddr| env.ipam_dir().join(NET).join(ip.to_string());
    for ip in results.iter().flat_map(result_ips) {
        assert!(lease(ip).exists(), "lease file for {ip} expected");
    }
    // Nothing per attachment lives in iptables: GC leaves the shared masquerade chains alone.
    let nat_before = nat(&env);
    env.gc(&conf, &[("a", "eth0")]).ok_empty();
    env.check(&ctrs[0], "a", &conf, &results[0]).ok_empty();
    env.check_if(octr, "a", "eth1", &other, &ro).ok_empty();
    assert_eq!(nat(&env), nat_before);
    for (i, cid) in ["b", "c"].iter().enumerate() {
        let r = &results[i + 1];
        assert!(
            env.link(&host_veth(r)).is_none(),
            "{cid}'s veth survived GC"
        );
        for ip in result_ips(r) {
            assert!(!lease(ip).exists(), "{cid}'s lease {ip} survived GC");
        }
    }
    // The older key name works too, and GC is idempotent.
    let mut old = conf.clone();
    old["cni.dev/attachments"] = json!([]);
    env.host()
        .cni(&env.p.bridge)
        .command("GC")
        .cni_path(&env.p.cni_path)
        .stdin(&old)
        .run()
        .ok_empty();
    assert!(
        env.link(&host_veth(&results[0])).is_none(),
        "an empty list means all are stale"
    );
    env.check_if(octr, "a", "eth1", &other, &ro).ok_empty();
}
