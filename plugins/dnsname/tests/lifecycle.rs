//! The server's life: ADD that returns has a name that resolves, concurrent ADDs never make a
//! query fail, a SIGKILLed server comes back with the next ADD or CHECK, GC keeps only valid
//! attachments.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cni::Attachment;
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn concurrent_adds_while_a_client_queries_never_fail_a_query_and_each_name_resolves_when_add_returns()
 {
    let net = Net::new();
    let (a, rt_a, ra) = net.add("ca", "alpha", &[]);
    let a4 = addrs(&ra).0;
    let stop = AtomicBool::new(false);
    let (asked, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let added: Vec<_> = std::thread::scope(|s| {
        s.spawn(|| {
            let c = client(&a);
            while !stop.load(Ordering::Relaxed) {
                asked.fetch_add(1, Ordering::Relaxed);
                match ask(&c, GW4, "alpha", RecordType::A) {
                    Ok((ResponseCode::NoError, ips)) if ips == vec![a4.clone()] => {}
                    other => {
                        eprintln!("failed query: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let net = &net;
                let a = &a;
                s.spawn(move || {
                    let c = client(a);
                    (0..6)
                        .map(|i| {
                            let (id, name) = (format!("w{w}c{i}"), format!("w{w}n{i}"));
                            let (ns, rt, r) = net.add(&id, &name, &[]);
                            // Resolvable the moment ADD returns: no retry.
                            assert_eq!(
                                must(&c, &name, RecordType::A).1,
                                vec![addrs(&r).0],
                                "{name} right after its ADD"
                            );
                            (ns, rt)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let added = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        stop.store(true, Ordering::Relaxed);
        added
    });
    assert!(asked.load(Ordering::Relaxed) > 10, "the client asked");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed queries");
    let pid = net.server_pid().unwrap();
    for (_, rt) in &added {
        net.del(rt);
    }
    net.del(&rt_a);
    net.assert_clean(&[pid]);
}

#[test]
fn a_sigkilled_server_is_restarted_by_the_next_add_and_by_check() {
    let net = Net::new();
    let (a, rt_a, ra) = net.add("ca", "alpha", &[]);
    let c = client(&a);
    let first = net.server_pid().unwrap();
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    while alive(first) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The next ADD starts a new one, serving both names.
    let (_b, rt_b, rb) = net.add("cb", "beta", &[]);
    let second = net.server_pid().unwrap();
    assert_ne!(first, second);
    assert_eq!(must(&c, "alpha", RecordType::A).1, vec![addrs(&ra).0]);
    assert_eq!(must(&c, "beta", RecordType::A).1, vec![addrs(&rb).0]);
    // CHECK finds the server gone and starts it again.
    kill(Pid::from_raw(second), Signal::SIGKILL).unwrap();
    while alive(second) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    net.h
        .check(&net.list, &rt_a)
        .expect("CHECK restarts the server");
    let third = net.server_pid().unwrap();
    assert!(alive(third) && third != second);
    assert_eq!(must(&c, "beta", RecordType::A).1, vec![addrs(&rb).0]);
    // CHECK notices a record that is not there.
    let ghost = net.rt(&a, "ghost", Some("ghost"), &[]);
    let mut prev = ra.clone();
    prev.cni_version = "1.1.0".into();
    let e = net
        .h
        .exec(
            &net.list.plugins[1],
            "CHECK",
            "1.1.0",
            NET,
            &ghost,
            Some(&prev),
        )
        .unwrap_err();
    assert_eq!(e.code, 999, "{e:?}");
    assert!(e.msg.contains("no dns record"), "{}", e.msg);
    net.del(&rt_b);
    net.del(&rt_a);
    net.assert_clean(&[first, second, third]);
}

#[test]
fn gc_keeps_only_the_records_of_valid_attachments() {
    let net = Net::new();
    let (a, rt_a, _) = net.add("ca", "alpha", &[]);
    let (_b, rt_b, rb) = net.add("cb", "beta", &[]);
    let c = client(&a);
    // GC through dnsname alone (the bridge's own GC is tested with the bridge).
    let mut conf = net.list.plugins[1].clone();
    conf["cniVersion"] = serde_json::json!("1.1.0");
    conf["name"] = serde_json::json!(NET);
    conf["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": "cb", "ifname": "eth0"}]);
    net.h
        .exec_binary(&net.h.bin_dir().join("dnsname"), "GC", None, &conf)
        .unwrap();
    assert_eq!(must(&c, "alpha", RecordType::A).0, ResponseCode::NXDomain);
    assert_eq!(must(&c, "beta", RecordType::A).1, vec![addrs(&rb).0]);
    let pid = net.server_pid().unwrap();
    // A GC that keeps nothing stops the server.
    let valid: Vec<Attachment> = Vec::new();
    conf["cni.dev/valid-attachments"] = serde_json::to_value(&valid).unwrap();
    net.h
        .exec_binary(&net.h.bin_dir().join("dnsname"), "GC", None, &conf)
        .unwrap();
    assert!(!alive(pid));
    assert!(!net.dns_dir().join(NET).exists());
    net.del(&rt_a);
    net.del(&rt_b);
    net.assert_clean(&[pid]);
}

#[test]
fn sighup_reloads_the_records_without_a_restart() {
    let net = Net::new();
    let (a, rt, _) = net.add("ca", "alpha", &[]);
    let c = client(&a);
    let pid = net.server_pid().unwrap();
    // An operator's edit of the records file, then SIGHUP (what `kill -HUP` does).
    let path = net.dns_dir().join(NET).join("records.json");
    let mut records: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    records["entries"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
        "containerId": "manual", "ifname": "eth0", "names": ["manual"], "ips": ["10.77.0.200"]}));
    std::fs::write(&path, records.to_string()).unwrap();
    assert_eq!(
        must(&c, "manual.dns.tether", RecordType::A).0,
        ResponseCode::NXDomain
    );
    kill(Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    // The signal is not acknowledged: wait for its effect (the plugin uses the control socket).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let got = must(&c, "manual.dns.tether", RecordType::A);
        if got.1 == vec!["10.77.0.200".to_string()] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload: {got:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(net.server_pid(), Some(pid));
    assert!(alive(pid), "reloaded, not restarted");
    // The plugin's own records are still served, and its DEL of the last real container
    // leaves the hand-made entry: the server stays for it until GC or its DEL.
    net.del(&rt);
    assert!(alive(pid));
    let mut rt_manual = rt.clone();
    rt_manual.container_id = "manual".into();
    net.del(&rt_manual);
    net.assert_clean(&[pid]);
}
