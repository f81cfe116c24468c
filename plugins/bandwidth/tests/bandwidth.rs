//! The bandwidth binary against a real kernel: the qdiscs it programs (compared with the reference
//! plugin's), measured throughput in both directions, CHECK, and DEL leaving nothing behind.

use cni::CniResult;
use cni::runtime::ConfList;
use netns_fixtures::{CniHost, Netns, conflist, reference_plugin};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BANDWIDTH: &str = env!("CARGO_BIN_EXE_bandwidth");

/// A host whose `CNI_PATH` has `bandwidth` (ours unless given), our bridge and host-local, and a
/// container.
fn host_with(bandwidth: &Path) -> (CniHost, Netns) {
    let t = CniHost::chained(&[("bandwidth", bandwidth)]);
    let ctr = t.container();
    (t, ctr)
}

fn host() -> (CniHost, Netns) {
    host_with(Path::new(BANDWIDTH))
}

fn reference_bandwidth() -> PathBuf {
    reference_plugin("bandwidth")
        .expect("/usr/lib/cni/bandwidth is missing: install Debian's containernetworking-plugins")
}

fn tc_json(ns: &Netns, args: &[&str]) -> Value {
    let out = ns.sh("tc", &[&["-j"], args].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("tc {args:?}: {e}: {out}"))
}

/// The host veth of the container (the result's host interface that is not the bridge).
fn host_veth(r: &CniResult) -> String {
    r.interfaces
        .iter()
        .find(|i| i.sandbox.is_none() && i.name.starts_with("veth"))
        .expect("a host veth in the result")
        .name
        .clone()
}

fn ifb_links(ns: &Netns) -> Vec<String> {
    let v = ns.ip_json(&["link", "show", "type", "ifb"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// Kind and options of the root (or ingress) qdisc of `dev`, without the counters.
fn qdisc(ns: &Netns, dev: &str, ingress: bool) -> Option<(String, Value)> {
    let v = tc_json(ns, &["qdisc", "show", "dev", dev]);
    v.as_array()
        .unwrap()
        .iter()
        .find(|q| {
            if ingress {
                q["kind"] == "ingress"
            } else {
                q["root"] == true
            }
        })
        .map(|q| {
            (
                q["kind"].as_str().unwrap().to_string(),
                q["options"].clone(),
            )
        })
}

/// The device the ingress filters of `dev` redirect to.
fn redirect_target(ns: &Netns, dev: &str) -> Option<String> {
    let v = tc_json(ns, &["filter", "show", "dev", dev, "ingress"]);
    v.as_array().unwrap().iter().find_map(|f| {
        let a = &f["options"]["actions"][0];
        (a["kind"] == "mirred" && a["mirred_action"] == "redirect")
            .then(|| a["to_dev"].as_str().unwrap().to_string())
    })
}

const LIMITS: &str = r#"{"ingressRate": 8000000, "ingressBurst": 256000,
                         "egressRate": 4000000, "egressBurst": 128000}"#;

fn shaped_attachment(t: &CniHost, ctr: &Netns, version: &str) -> (ConfList, CniResult) {
    let mut bw: Value = serde_json::from_str(LIMITS).unwrap();
    bw["type"] = json!("bandwidth");
    let list = conflist(version, "bwnet", vec![t.bridge_conf("10.95.0.0/24"), bw]);
    let r = t.add(&list, &ctr.attachment("c1", "eth0")).expect("ADD");
    (list, r)
}

type Qdisc = Option<(String, Value)>;

/// The veth's root qdisc, the ifb's root qdisc, and the target of the veth's ingress redirect.
type Shaping = (Qdisc, Qdisc, Option<String>);

/// What `tc` shows for the attachment.
fn shaping(t: &CniHost, r: &CniResult) -> Shaping {
    let veth = host_veth(r);
    let ifb = r
        .interfaces
        .iter()
        .find(|i| i.name.starts_with("bwp"))
        .map(|i| i.name.clone());
    (
        qdisc(&t.host, &veth, false),
        ifb.as_deref().and_then(|i| qdisc(&t.host, i, false)),
        redirect_target(&t.host, &veth),
    )
}

#[test]
fn qdiscs_as_configured_and_as_the_reference_makes_them() {
    let (t, ctr) = host();
    let c1 = ctr.attachment("c1", "eth0");
    let (list, r) = shaped_attachment(&t, &ctr, "1.0.0");
    let ifb = r.interfaces.last().unwrap();
    assert!(
        ifb.name.starts_with("bwp") && ifb.name.len() == 15,
        "{ifb:?}"
    );
    assert!(ifb.sandbox.is_none() && ifb.mac.is_some());
    assert_eq!(ifb_links(&t.host), vec![ifb.name.clone()]);

    let (veth_q, ifb_q, target) = shaping(&t, &r);
    assert_eq!(
        veth_q,
        Some((
            "tbf".into(),
            json!({"rate": 1_000_000, "burst": 32_000, "lat": 25_000})
        ))
    );
    assert_eq!(
        ifb_q,
        Some((
            "tbf".into(),
            json!({"rate": 500_000, "burst": 16_000, "lat": 25_000})
        ))
    );
    assert_eq!(target.as_deref(), Some(ifb.name.as_str()));
    assert!(qdisc(&t.host, &host_veth(&r), true).is_some());

    // The reference plugin, same config, in its own host: the same kernel state.
    let (tr, ctr_r) = host_with(&reference_bandwidth());
    let (list_r, rr) = shaped_attachment(&tr, &ctr_r, "1.0.0");
    let (veth_r, ifb_r, target_r) = shaping(&tr, &rr);
    assert_eq!(veth_q, veth_r, "ingress tbf differs from the reference's");
    assert_eq!(ifb_q, ifb_r, "egress tbf differs from the reference's");
    assert_eq!(
        target_r.as_deref(),
        Some(rr.interfaces.last().unwrap().name.as_str())
    );
    assert_eq!(
        rr.interfaces.last().unwrap().name,
        ifb.name,
        "same ifb name"
    );
    tr.del(&list_r, &ctr_r.attachment("c1", "eth0")).unwrap();

    t.check(&list, &c1).expect("CHECK");
    let veth = host_veth(&r);
    t.host.sh(
        "tc",
        &[
            "qdisc", "replace", "dev", &veth, "root", "handle", "1:", "tbf", "rate", "1mbit",
            "burst", "32000", "latency", "25ms",
        ],
    );
    let e = t
        .check(&list, &c1)
        .expect_err("CHECK must see the changed rate");
    assert!(e.msg.contains("tbf"), "{e:?}");

    // DEL of the plugin alone (the bridge's DEL would delete the veth and hide leftovers).
    let bw = list.plugins[1].clone();
    t.exec(&bw, "DEL", "1.0.0", "bwnet", &c1, Some(&r))
        .expect("DEL");
    assert!(ifb_links(&t.host).is_empty());
    assert_eq!(
        qdisc(&t.host, &veth, false).map(|q| q.0),
        Some("noqueue".into())
    );
    assert!(qdisc(&t.host, &veth, true).is_none());
    assert_eq!(redirect_target(&t.host, &veth), None);
    t.exec(&bw, "DEL", "1.0.0", "bwnet", &c1, Some(&r))
        .expect("a second DEL succeeds");
    t.del(&list, &c1).unwrap();
}

/// Sends as fast as possible from `from` to a listener in `to` on `addr` for `secs` and returns
/// the rate the receiver saw, in bits per second.
fn measure(from: &Netns, to: &Netns, addr: IpAddr, secs: f64) -> f64 {
    let (port_tx, port_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            to.run(|| {
                let l = TcpListener::bind(SocketAddr::new(addr, 0)).unwrap();
                port_tx.send(l.local_addr().unwrap().port()).unwrap();
                let (mut c, _) = l.accept().unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0);
                // The clock starts at the first byte, so connection setup does not count.
                let start = Instant::now();
                let mut total = 0usize;
                while start.elapsed().as_secs_f64() < secs {
                    total += c.read(&mut buf).unwrap();
                }
                total as f64 * 8.0 / start.elapsed().as_secs_f64()
            })
        });
        let port = port_rx.recv().unwrap();
        s.spawn(move || {
            from.run(|| {
                let mut c = TcpStream::connect(SocketAddr::new(addr, port)).unwrap();
                c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                let chunk = vec![0x5au8; 64 * 1024];
                let deadline = Instant::now() + Duration::from_secs_f64(secs + 5.0);
                // Stops when the receiver hangs up (or, as a safety net, at the deadline).
                while Instant::now() < deadline && c.write_all(&chunk).is_ok() {}
            })
        });
        receiver.join().unwrap()
    })
}

#[test]
fn rate_limits_hold_in_both_directions() {
    let (t, ctr) = host();
    let c1 = ctr.attachment("c1", "eth0");
    let (list, r) = shaped_attachment(&t, &ctr, "0.4.0");
    let gw = r.ips[0].gateway.expect("bridge gateway");
    let ctr_ip = r.ips[0].address.ip();
    // Ingress: host -> container through the veth's tbf (8 Mbit/s).
    let ingress = measure(&t.host, &ctr, ctr_ip, 2.0);
    // Egress: container -> host through the ifb's tbf (4 Mbit/s).
    let egress = measure(&ctr, &t.host, gw, 2.0);
    eprintln!("measured: ingress {ingress:.0} bit/s, egress {egress:.0} bit/s");
    assert!(
        (0.5 * 8e6..=1.3 * 8e6).contains(&ingress),
        "ingress {ingress:.0} bit/s is not near 8 Mbit/s"
    );
    assert!(
        (0.5 * 4e6..=1.3 * 4e6).contains(&egress),
        "egress {egress:.0} bit/s is not near 4 Mbit/s"
    );
    t.del(&list, &c1).unwrap();
    assert!(ifb_links(&t.host).is_empty());
}

#[test]
fn capability_versions_and_del_without_namespace() {
    let (t, ctr) = host();
    let bw = json!({"type": "bandwidth", "capabilities": {"bandwidth": true}});
    let list = conflist(
        "0.4.0",
        "capnet",
        vec![t.bridge_conf("10.96.0.0/24"), bw.clone()],
    );
    let mut rt = ctr.attachment("c9", "eth0");
    rt.capability_args.insert(
        "bandwidth".into(),
        json!({"egressRate": 1000000, "egressBurst": 100000}),
    );
    let r = t.add(&list, &rt).expect("ADD");
    let ifb = r.interfaces.last().unwrap().name.clone();
    assert_eq!(ifb_links(&t.host), vec![ifb.clone()]);
    assert_eq!(
        qdisc(&t.host, &ifb, false).map(|q| q.1["rate"].clone()),
        Some(json!(125_000))
    );
    // No ingress limit was asked for: the veth keeps its default qdisc.
    assert_eq!(
        qdisc(&t.host, &host_veth(&r), false).map(|q| q.0),
        Some("noqueue".into())
    );
    t.check(&list, &rt).expect("CHECK");

    // Without limits the plugin passes prevResult through untouched.
    let plain = t.exec(
        &json!({"type": "bandwidth"}),
        "ADD",
        "0.4.0",
        "capnet",
        &rt,
        Some(&r),
    );
    assert_eq!(
        CniResult::from_json(&plain.unwrap().unwrap())
            .unwrap()
            .interfaces,
        r.interfaces
    );
    let bad = json!({"type": "bandwidth", "ingressRate": 1000});
    assert_eq!(
        t.exec(&bad, "ADD", "0.4.0", "capnet", &rt, Some(&r))
            .unwrap_err()
            .code,
        7
    );

    // DEL when the runtime's namespace path is already gone still removes the ifb.
    let mut gone = rt.clone();
    gone.netns = t.dir().join("no-such-netns");
    t.exec(&bw, "DEL", "0.4.0", "capnet", &gone, Some(&r))
        .expect("DEL without a namespace");
    assert!(ifb_links(&t.host).is_empty());

    // A 0.2.0 config (no interfaces in its results, which the reference refuses) still finds the
    // veth through the kernel, and its DEL removes everything.
    let old = json!({"type": "bandwidth", "egressRate": 1000000, "egressBurst": 100000,
                     "ingressRate": 1000000, "ingressBurst": 100000});
    let out = t
        .exec(&old, "ADD", "0.2.0", "oldnet", &rt, Some(&r))
        .expect("ADD at 0.2.0")
        .unwrap();
    assert!(out.get("interfaces").is_none(), "{out}");
    let old_ifb = ifb_links(&t.host);
    assert_eq!(old_ifb.len(), 1);
    assert_eq!(
        redirect_target(&t.host, &host_veth(&r)),
        Some(old_ifb[0].clone())
    );
    t.exec(&old, "DEL", "0.2.0", "oldnet", &rt, None)
        .expect("DEL at 0.2.0");
    assert!(ifb_links(&t.host).is_empty());
    assert!(qdisc(&t.host, &host_veth(&r), true).is_none());
    assert_eq!(
        qdisc(&t.host, &host_veth(&r), false).map(|q| q.0),
        Some("noqueue".into())
    );
    t.del(&list, &rt).unwrap();
}
