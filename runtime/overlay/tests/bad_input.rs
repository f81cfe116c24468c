//! `tether overlay init` and `agent` refuse what cannot work, with errors that say why.

mod cluster;

use cluster::{Cluster, NET};
use std::time::{Duration, Instant};

fn fails(out: std::process::Output, expect: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure with {expect:?}, got success: {err}"
    );
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    err
}

#[test]
fn init_is_a_no_op_with_the_same_values_and_an_error_with_different_ones() {
    let c = Cluster::new(1, 1, 5);
    c.init("10.220.0.0/16", &["--vni", "9"]);
    c.init(
        "10.220.0.0/16",
        &["--vni", "9", "--host-prefix", "24", "--port", "4789"],
    );
    let url = c.url.clone();
    let err = fails(
        c.tether(
            0,
            &[
                "init",
                NET,
                "--etcd",
                &url,
                "--subnet",
                "10.220.0.0/16",
                "--vni",
                "10",
            ],
        ),
        "already exists in etcd with a different definition",
    );
    assert!(
        err.contains("\"vni\":9") && err.contains("\"vni\":10"),
        "{err}"
    );
    let stored = c.etcdctl(&["get", "--print-value-only", "/tether/overlay/ov/config"]);
    let v: serde_json::Value = serde_json::from_slice(&stored.stdout).unwrap();
    assert_eq!(v["vni"], 9, "the first definition stays");
    assert_eq!(v["subnet"], "10.220.0.0/16");
    assert_eq!(v["hostPrefix"], 24);
    assert_eq!(v["port"], 4789);
}

#[test]
fn init_refuses_an_out_of_range_vni_a_bad_host_prefix_and_port_before_touching_etcd() {
    let c = Cluster::new(1, 1, 5);
    let url = c.url.clone();
    let init = |extra: &[&str]| {
        let args = [
            &["init", NET, "--etcd", &url, "--subnet", "10.221.0.0/16"][..],
            extra,
        ]
        .concat();
        c.tether(0, &args)
    };
    fails(
        init(&["--vni", "16777216"]),
        "--vni 16777216: a VXLAN network identifier is 1..=16777215",
    );
    fails(init(&["--vni", "0"]), "--vni 0");
    fails(
        init(&["--host-prefix", "16"]),
        "--host-prefix 16: must be longer than the subnet's /16",
    );
    fails(init(&["--host-prefix", "31"]), "--host-prefix 31");
    fails(init(&["--port", "0"]), "--port 0");
    fails(init(&["--port", "70000"]), "70000");
    fails(
        c.tether(
            0,
            &["init", NET, "--etcd", &url, "--subnet", "10.221.1.0/16"],
        ),
        "host bits are set",
    );
    fails(
        c.tether(
            0,
            &["init", "../x", "--etcd", &url, "--subnet", "10.221.0.0/16"],
        ),
        "invalid overlay network name",
    );
    assert!(c.keys().is_empty(), "nothing stored: {:?}", c.keys());
}

#[test]
fn an_unreachable_etcd_is_an_error_naming_its_url_within_a_few_seconds() {
    let c = Cluster::new(1, 1, 5);
    // On the underlay, but nobody listens there.
    let bad = "http://192.168.77.99:2379";
    for args in [
        vec!["init", NET, "--etcd", bad, "--subnet", "10.222.0.0/16"],
        vec!["agent", NET, "--etcd", bad, "--iface", "eth0"],
    ] {
        let t = Instant::now();
        fails(c.tether(0, &args), &format!("etcd at {bad}"));
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "took {:?}",
            t.elapsed()
        );
    }
    fails(
        c.tether(
            0,
            &[
                "init",
                NET,
                "--etcd",
                "192.168.77.1:2379",
                "--subnet",
                "10.222.0.0/16",
            ],
        ),
        "expected http://HOST:PORT",
    );
}

#[test]
fn an_agent_refuses_an_uninitialised_network_a_missing_interface_and_an_overlapping_subnet() {
    let c = Cluster::new(1, 1, 5);
    let url = c.url.clone();
    fails(
        c.tether(0, &["agent", "nosuch", "--etcd", &url, "--iface", "eth0"]),
        "overlay network \"nosuch\" is not initialised in etcd at http://192.168.77.1:2379: run `tether overlay init nosuch",
    );
    c.init("10.223.0.0/16", &[]);
    fails(
        c.tether(0, &["agent", NET, "--etcd", &url, "--iface", "nope0"]),
        "--iface nope0: no such interface on this host",
    );
    let args = [
        "init",
        "under",
        "--etcd",
        &url,
        "--subnet",
        "192.168.0.0/16",
    ];
    assert!(c.tether(0, &args).status.success());
    fails(
        c.tether(0, &["agent", "under", "--etcd", &url, "--iface", "eth0"]),
        "overlay subnet 192.168.0.0/16 of network \"under\" overlaps the underlay network 192.168.77.0/24 of eth0",
    );
    fails(
        c.tether(
            0,
            &[
                "agent",
                NET,
                "--etcd",
                &url,
                "--iface",
                "eth0",
                "--lease-ttl",
                "1",
            ],
        ),
        "--lease-ttl 1",
    );
    // None of them left a lease, a key, a device or a file behind.
    let keys: Vec<_> = c
        .keys()
        .into_iter()
        .filter(|k| k.contains("/subnets/"))
        .collect();
    assert!(keys.is_empty(), "{keys:?}");
    let leases = c.etcdctl(&["lease", "list"]);
    assert!(String::from_utf8_lossy(&leases.stdout).starts_with("found 0 leases"));
    c.assert_host_clean(0);
}
