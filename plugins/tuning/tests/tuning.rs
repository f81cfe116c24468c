//! The tuning binary against a real kernel: values land inside the container (and only there),
//! CHECK sees drift, DEL puts the originals back, bad configs change nothing.

use cni::CniResult;
use cni::runtime::{ConfList, RuntimeConf};
use netns_fixtures::{CniHost, Netns, conflist};
use serde_json::{Value, json};
use std::path::Path;

const TUNING: &str = env!("CARGO_BIN_EXE_tuning");

/// A host whose `CNI_PATH` has our tuning, bridge and host-local, and a container.
fn host() -> (CniHost, Netns) {
    let t = CniHost::chained(&[("tuning", Path::new(TUNING))]);
    let ctr = t.container();
    (t, ctr)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LinkState {
    mac: String,
    mtu: u64,
    promisc: bool,
    allmulti: bool,
    txqlen: u64,
}

fn link_state(ns: &Netns, dev: &str) -> LinkState {
    let v = ns.ip_json(&["link", "show", "dev", dev]);
    let l = &v[0];
    let flags: Vec<&str> = l["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    LinkState {
        mac: l["address"].as_str().unwrap().to_string(),
        mtu: l["mtu"].as_u64().unwrap(),
        promisc: flags.contains(&"PROMISC"),
        allmulti: flags.contains(&"ALLMULTI"),
        // iproute2 leaves out a txqlen of 0.
        txqlen: l["txqlen"].as_u64().unwrap_or(0),
    }
}

fn setup(t: &CniHost, ctr: &Netns, subnet: &str) -> (ConfList, RuntimeConf, CniResult) {
    let list = conflist("1.0.0", "tnet", vec![t.bridge_conf(subnet)]);
    let rt = ctr.attachment("c1", "eth0");
    let r0 = t.add(&list, &rt).expect("bridge ADD");
    (list, rt, r0)
}

#[test]
fn values_applied_in_the_container_and_restored_on_del() {
    let (t, ctr) = host();
    let (list, rt, r0) = setup(&t, &ctr, "10.91.0.0/24");
    let before = link_state(&ctr, "eth0");
    let somaxconn = ctr.sysctl("net.core.somaxconn");
    let arp_filter = ctr.sysctl("net.ipv4.conf.eth0.arp_filter");
    let host_somaxconn = t.host.sysctl("net.core.somaxconn");
    assert!(!before.promisc && !before.allmulti);
    assert_ne!(somaxconn, "1234");
    assert_eq!(arp_filter, "0");

    let tuning = json!({
        "type": "tuning",
        "dataDir": t.dir().join("tuning"),
        "sysctl": {"net.core.somaxconn": "1234", "net.ipv4.conf.IFNAME.arp_filter": "1"},
        "mac": "02:11:22:33:44:55", "mtu": 1400, "promisc": true, "allmulti": true, "txQLen": 777
    });
    let out = t
        .exec(&tuning, "ADD", "1.0.0", "tnet", &rt, Some(&r0))
        .expect("tuning ADD")
        .expect("a result");
    let r1 = CniResult::from_json(&out).unwrap();
    let eth0 = r1.interfaces.iter().find(|i| i.name == "eth0").unwrap();
    assert_eq!(eth0.mac.as_deref(), Some("02:11:22:33:44:55"));
    assert_eq!(r1.ips, r0.ips, "prevResult passes through");

    assert_eq!(
        link_state(&ctr, "eth0"),
        LinkState {
            mac: "02:11:22:33:44:55".into(),
            mtu: 1400,
            promisc: true,
            allmulti: true,
            txqlen: 777
        }
    );
    assert_eq!(ctr.sysctl("net.core.somaxconn"), "1234");
    assert_eq!(ctr.sysctl("net.ipv4.conf.eth0.arp_filter"), "1");
    assert_eq!(t.host.sysctl("net.core.somaxconn"), host_somaxconn);
    let backup = t.dir().join("tuning/c1_eth0.json");
    assert!(backup.exists());

    t.exec(&tuning, "CHECK", "1.0.0", "tnet", &rt, Some(&r1))
        .expect("CHECK of an untouched container");
    ctr.sh("ip", &["link", "set", "eth0", "mtu", "1450"]);
    let e = t
        .exec(&tuning, "CHECK", "1.0.0", "tnet", &rt, Some(&r1))
        .expect_err("CHECK must see the MTU drift");
    assert!(e.msg.contains("MTU"), "{e:?}");

    t.exec(&tuning, "DEL", "1.0.0", "tnet", &rt, Some(&r1))
        .expect("tuning DEL");
    assert_eq!(link_state(&ctr, "eth0"), before);
    assert_eq!(ctr.sysctl("net.core.somaxconn"), somaxconn);
    assert_eq!(ctr.sysctl("net.ipv4.conf.eth0.arp_filter"), arp_filter);
    assert!(!backup.exists());
    t.exec(&tuning, "DEL", "1.0.0", "tnet", &rt, Some(&r1))
        .expect("a second DEL succeeds");
    assert_eq!(link_state(&ctr, "eth0"), before);

    t.del(&list, &rt).unwrap();
}

#[test]
fn invalid_configs_change_nothing() {
    let (t, ctr) = host();
    let (list, rt, r0) = setup(&t, &ctr, "10.92.0.0/24");
    let before = link_state(&ctr, "eth0");
    let somaxconn = ctr.sysctl("net.core.somaxconn");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let cases: Vec<(Value, u32)> = vec![
        (
            json!({"net.core.somaxconn": "999", "kernel.hostname": "evil"}),
            7,
        ),
        (
            json!({"net.core.somaxconn": "999", "net.ipv4/../../kernel/hostname": "evil"}),
            7,
        ),
        (
            json!({"net.core.somaxconn": "999", "net/../kernel/hostname": "evil"}),
            7,
        ),
        (
            json!({"net.core.somaxconn": "999", "net.core..somaxconn": "1"}),
            7,
        ),
        (
            json!({"net.core.somaxconn": "999", "net.core.no_such_sysctl": "1"}),
            7,
        ),
        // A value is one line: "1\n2" would write two.
        (json!({"net.core.somaxconn": "1\n2"}), 7),
        (json!({"net.core.somaxconn": "999\u{0}1"}), 7),
        (
            json!({"net.core.somaxconn": "999", "net.ipv4.conf.eth0.arp_filter": "1\r"}),
            7,
        ),
        (
            json!({"net.core.somaxconn": "999", "net.core.somaxconn\n": "1"}),
            7,
        ),
        (
            json!({"net.core.somaxconn": "999", "net/core//somaxconn": "1"}),
            7,
        ),
        (json!({"net.core.somaxconn": "999", "net.ipv4": "1"}), 7),
        // One file under two names.
        (
            json!({"net.ipv4.conf.IFNAME.arp_filter": "1", "net/ipv4/conf/eth0/arp_filter": "0"}),
            7,
        ),
    ];
    for (sysctls, code) in cases {
        let conf = json!({"type": "tuning", "dataDir": t.dir().join("tuning"), "sysctl": sysctls,
                          "mtu": 1300});
        let e = t
            .exec(&conf, "ADD", "1.0.0", "tnet", &rt, Some(&r0))
            .expect_err(&format!("{sysctls} accepted"));
        assert_eq!(e.code, code, "{sysctls}: {e:?}");
    }
    // An ADD with a sysctl and `extra`'s link values, which must fail.
    let refused = |extra: &Value| {
        let mut conf = json!({"type": "tuning", "dataDir": t.dir().join("tuning"),
                              "sysctl": {"net.core.somaxconn": "999"}});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        t.exec(&conf, "ADD", "1.0.0", "tnet", &rt, Some(&r0))
            .expect_err(&format!("{extra} accepted"))
    };
    // Link values no link can take: refused before anything is read or written.
    for extra in [
        json!({"mtu": 70000}),
        json!({"mtu": 1}),
        json!({"mac": "00:00:00:00:00:00"}),
        json!({"promisc": "yes"}),
        json!({"txQLen": -1}),
    ] {
        let e = refused(&extra);
        assert_eq!(e.code, 7, "{extra}: {e:?}");
    }
    // Valid keys, but the kernel refuses a value midway (a veth's MTU is at most 65535, below
    // the 65536 a loopback has): what was already set is put back.
    for extra in [
        json!({"mtu": 65536}),
        json!({"txQLen": 100, "mac": "02:00:00:00:00:00", "mtu": 65536}),
    ] {
        let e = refused(&extra);
        assert!(e.msg.contains("MTU"), "{e:?}");
    }
    let bad_mac =
        json!({"type": "tuning", "dataDir": t.dir().join("tuning"), "mac": "02:00:00:00:00"});
    assert_eq!(
        t.exec(&bad_mac, "ADD", "1.0.0", "tnet", &rt, Some(&r0))
            .unwrap_err()
            .code,
        7
    );
    let unchained = json!({"type": "tuning", "dataDir": t.dir().join("tuning"), "mtu": 1300});
    assert_eq!(
        t.exec(&unchained, "ADD", "1.0.0", "tnet", &rt, None)
            .unwrap_err()
            .code,
        7
    );

    assert_eq!(link_state(&ctr, "eth0"), before);
    assert_eq!(ctr.sysctl("net.core.somaxconn"), somaxconn);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        hostname
    );
    assert!(!t.dir().join("tuning/c1_eth0.json").exists());
    t.del(&list, &rt).unwrap();
}

#[test]
fn conflist_with_mac_capability_at_040() {
    let (t, ctr) = host();
    let tuning = json!({"type": "tuning", "capabilities": {"mac": true},
                        "dataDir": t.dir().join("tuning"), "mtu": 1300});
    let list = conflist(
        "0.4.0",
        "tnet",
        vec![t.bridge_conf("10.93.0.0/24"), tuning.clone()],
    );
    let mut rt = ctr.attachment("c2", "eth0");
    rt.capability_args
        .insert("mac".into(), json!("02:aa:bb:cc:dd:ee"));
    rt.args = vec![
        ("IgnoreUnknown".into(), "1".into()),
        ("MAC".into(), "02:00:00:00:00:09".into()),
    ];
    let r = t.add(&list, &rt).expect("ADD");
    let eth0 = r.interfaces.iter().find(|i| i.name == "eth0").unwrap();
    assert_eq!(eth0.mac.as_deref(), Some("02:aa:bb:cc:dd:ee"));
    let l = link_state(&ctr, "eth0");
    assert_eq!((l.mac.as_str(), l.mtu), ("02:aa:bb:cc:dd:ee", 1300));
    t.check(&list, &rt).expect("CHECK");
    t.del(&list, &rt).expect("DEL");
    assert!(!t.dir().join("tuning/c2_eth0.json").exists());
    t.del(&list, &rt).expect("DEL again");
    // args.cni.mac wins over CNI_ARGS MAC (which the bridge applied first).
    let tuning = json!({"type": "tuning", "dataDir": t.dir().join("tuning"),
                        "args": {"cni": {"mac": "02:00:00:00:00:0a"}}});
    let list = conflist(
        "0.4.0",
        "tnet2",
        vec![t.bridge_conf("10.93.0.0/24"), tuning],
    );
    let r = t.add(&list, &rt).expect("ADD");
    assert_eq!(link_state(&ctr, "eth0").mac, "02:00:00:00:00:0a");
    let eth0 = r.interfaces.iter().find(|i| i.name == "eth0").unwrap();
    assert_eq!(eth0.mac.as_deref(), Some("02:00:00:00:00:0a"));
    t.del(&list, &rt).expect("DEL");
    assert!(!t.dir().join("tuning/c2_eth0.json").exists());
}

#[test]
fn del_when_the_namespace_is_gone() {
    let (t, ctr) = host();
    let (list, rt, r0) = setup(&t, &ctr, "10.94.0.0/24");
    let tuning = json!({"type": "tuning", "dataDir": t.dir().join("tuning"), "mtu": 1400});
    t.exec(&tuning, "ADD", "1.0.0", "tnet", &rt, Some(&r0))
        .expect("ADD");
    let backup = t.dir().join("tuning/c1_eth0.json");
    assert!(backup.exists());
    let mut gone = rt.clone();
    gone.netns = t.dir().join("no-such-netns");
    t.exec(&tuning, "DEL", "1.0.0", "tnet", &gone, Some(&r0))
        .expect("DEL without a namespace succeeds");
    assert!(
        !backup.exists(),
        "nothing left to restore, so the backup goes"
    );
    t.del(&list, &rt).unwrap();
}
