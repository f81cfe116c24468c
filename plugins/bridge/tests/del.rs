//! DEL: idempotent, independent of the container's namespace, and it leaves the host as it was
//! before ADD. While other attachments remain, the network's shared state stays for them (the
//! bridge, its gateway addresses, the masquerade chain `TETHER-MASQ-*` per subnet with its
//! `POSTROUTING` jump); the last DEL removes it too (`assert_nothing_left`: only host-local's
//! `lock` and `last_reserved_ip.*` stay).

mod common;

use common::*;
use serde_json::json;

const DUAL: &[&str] = &["10.30.0.0/24", "fd30::/64"];

#[test]
fn del_restores_the_snapshot_and_is_idempotent() {
    let env = Env::new();
    let conf = env.gw_conf(DUAL);
    let before = env.snapshot();
    let ctr = env.th.container();
    let r = env.add(&ctr, "c1", &conf).ok();
    let during = env.snapshot();
    let masq: Vec<&String> = during
        .iptables
        .iter()
        .filter(|l| is_shared_masq(l))
        .collect();
    // Per family: the chain, its three rules, the jump.
    assert_eq!(masq.len(), 2 * 5, "{masq:#?}");
    assert!(
        during.files.keys().any(|k| k.ends_with("10.30.0.2")),
        "{:?}",
        during.files
    );

    env.del(Some(&ctr), "c1", &conf, Some(&r)).ok_empty();
    let after = env.snapshot();
    // The last DEL: the chains and jumps of both families and the bridge went with it (they
    // used to stay).
    assert_nothing_left(&before, &after);
    assert!(
        !after.iptables.iter().any(|l| is_shared_masq(l)),
        "{after:#?}"
    );
    assert!(env.link("tbr0").is_none());
    for ip in result_ips(&r) {
        assert!(
            !after.iptables.iter().any(|l| l.contains(&format!("{ip}/"))),
            "{ip} left in {after:#?}"
        );
    }
    assert!(ctr.netlink().link_by_name("eth0").unwrap().is_none());
    // Twice, and once more in every degraded form.
    env.del(Some(&ctr), "c1", &conf, Some(&r)).ok_empty();
    env.del(None, "c1", &conf, None).ok_empty();
    env.del_path(Some("/nonexistent/netns".as_ref()), "c1", &conf)
        .ok_empty();
    assert_nothing_left(&before, &env.snapshot());
}

#[test]
fn del_with_empty_netns_cleans_the_host_side() {
    let env = Env::new();
    let conf = env.gw_conf(DUAL);
    let before = env.snapshot();
    let ctr = env.th.container();
    let r = env.add(&ctr, "c1", &conf).ok();
    // nerdctl/ctr send an empty CNI_NETNS on DEL: the reference then leaks the veth and the
    // masquerade chain (plugins#810). Ours finds both by name.
    let out = env
        .host()
        .cni(&env.p.bridge)
        .command("DEL")
        .container_id("c1")
        .ifname("eth0")
        .env("CNI_NETNS", "")
        .cni_path(&env.p.cni_path)
        .stdin(&conf)
        .run();
    out.ok_empty();
    assert!(env.link(&host_veth(&r)).is_none());
    assert_nothing_left(&before, &env.snapshot());
    drop(ctr);
}

#[test]
fn del_after_the_container_namespace_is_gone() {
    let env = Env::new();
    let conf = env.gw_conf(DUAL);
    let before = env.snapshot();
    // The container is a process of its own, so that its namespace path (`/proc/PID/ns/net`)
    // disappears with it: a dropped `Netns`'s `/proc/self/fd/N` path could be reused by another
    // test's namespace.
    let mut holder = std::process::Command::new("unshare")
        .args(["-n", "sleep", "60"])
        .spawn()
        .expect("spawn unshare -n sleep");
    let path = std::path::PathBuf::from(format!("/proc/{}/ns/net", holder.id()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Wait until unshare has switched namespaces (the link differs from ours).
    while std::fs::read_link(&path).ok() == std::fs::read_link("/proc/self/ns/net").ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "unshare did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let r = env
        .host()
        .cni(&env.p.bridge)
        .command("ADD")
        .container_id("c1")
        .netns(&path)
        .ifname("eth0")
        .cni_path(&env.p.cni_path)
        .stdin(&conf)
        .run()
        .ok();
    holder.kill().expect("kill our namespace holder");
    holder.wait().expect("reap it");
    // The kernel frees the namespace (and the veth pair with it) asynchronously.
    while env.link(&host_veth(&r)).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "veth outlived its namespace"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Without prevResult too: nothing about the container is known but its id and ifname.
    env.del_path(Some(&path), "c1", &conf).ok_empty();
    assert_nothing_left(&before, &env.snapshot());
}

#[test]
fn del_without_prev_result_while_the_container_lives() {
    let env = Env::new();
    let conf = env.gw_conf(DUAL);
    let before = env.snapshot();
    let ctr = env.th.container();
    env.add(&ctr, "c1", &conf).ok();
    env.del(Some(&ctr), "c1", &conf, None).ok_empty();
    assert_nothing_left(&before, &env.snapshot());
    assert!(ctr.netlink().link_by_name("eth0").unwrap().is_none());
}

#[test]
fn del_of_an_unknown_container_changes_nothing() {
    let env = Env::new();
    let conf = env.gw_conf(DUAL);
    let ctr = env.th.container();
    let r = env.add(&ctr, "c1", &conf).ok();
    let before = env.snapshot();
    env.del(Some(&env.th.container()), "other", &conf, None)
        .ok_empty();
    env.del(None, "other", &conf, None).ok_empty();
    netns_fixtures::assert_snapshot_eq(&before, &env.snapshot());
    // c1 is untouched and still checks out.
    env.check(&ctr, "c1", &conf, &r).ok_empty();
}

#[test]
fn del_keeps_the_bridge_for_other_containers() {
    let env = Env::new();
    let conf = env.gw_conf(&["10.31.0.0/24"]);
    let (a, b) = (env.th.container(), env.th.container());
    let ra = env.add(&a, "a", &conf).ok();
    let rb = env.add(&b, "b", &conf).ok();
    let before = env.snapshot();
    env.del(Some(&a), "a", &conf, Some(&ra)).ok_empty();
    env.check(&b, "b", &conf, &rb).ok_empty();
    // b still uses the bridge, its address and the network's chains.
    let br = env.link("tbr0").expect("bridge stays");
    let addrs = env.host().netlink().addrs(Some(br.index)).unwrap();
    assert!(
        addrs.iter().any(|a| a.net.to_string() == "10.31.0.1/24"),
        "{addrs:?}"
    );
    let masq = |s: &netns_fixtures::Snapshot| {
        s.iptables
            .iter()
            .filter(|l| is_shared_masq(l))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(masq(&env.snapshot()), masq(&before));
    assert_eq!(masq(&before).len(), 5, "{before:#?}");
    env.del(Some(&b), "b", &conf, Some(&rb)).ok_empty();
    // The last DEL deletes the bridge it created and the chains (the reference keeps its bridge).
    assert!(env.link("tbr0").is_none());
    assert!(masq(&env.snapshot()).is_empty());
}

#[test]
fn a_network_renamed_between_add_and_del_does_not_leak_the_veth() {
    let env = Env::new();
    let conf = env.conf("1.0.0", &["10.32.0.0/24"], json!({ "bridge": "tbr0" }));
    let ctr = env.th.container();
    let r = env.add(&ctr, "c1", &conf).ok();
    let mut renamed = conf.clone();
    renamed["name"] = json!("renamed");
    env.del(None, "c1", &renamed, None).ok_empty();
    assert!(env.link(&host_veth(&r)).is_none());
}
