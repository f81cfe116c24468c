//! Bad input is refused with the kit's codes and leaves nothing: a name that is not a DNS
//! label, a domain with spaces, a path that is not absolute, port 53 of the gateway taken.

mod common;

use common::*;
use serde_json::json;

#[track_caller]
fn refused(net: &Net, name: Option<&str>, aliases: &[&str], code: u32, says: &str) {
    let ctr = net.h.container();
    let rt = net.rt(&ctr, "bad", name, aliases);
    let e = net.h.add(&net.list, &rt).expect_err("ADD must fail");
    assert_eq!(e.code, code, "{e:?}");
    assert!(e.msg.contains(says), "{}", e.msg);
    // The runtime's rollback of a failed ADD is its DEL.
    net.del(&rt);
}

#[test]
fn names_that_are_not_dns_labels_are_refused_and_leave_nothing() {
    let net = Net::new();
    refused(&net, Some("bad name"), &[], 4, "not a DNS label");
    refused(&net, Some("a.b"), &[], 4, "not a DNS label");
    refused(&net, Some(&"x".repeat(64)), &[], 4, "not a DNS label");
    refused(&net, Some("-x"), &[], 4, "not a DNS label");
    refused(&net, Some("ok"), &["al!as"], 7, "alias");
    net.assert_clean(&[]);
    // A good name after them works, on a server that starts only then.
    let (_c, rt, _) = net.add("good", "good_name", &[]);
    let pid = net.server_pid().unwrap();
    net.del(&rt);
    net.assert_clean(&[pid]);
}

#[test]
fn a_domain_with_spaces_or_a_relative_path_is_refused() {
    for (dns, says) in [
        (
            json!({"type": "dnsname", "domainName": "dns tether"}),
            "domainName",
        ),
        (
            json!({"type": "dnsname", "domainName": "a..b"}),
            "domainName",
        ),
        (json!({"type": "dnsname", "domainName": 5}), "domainName"),
        (json!({"type": "dnsname", "dataDir": "run/dns"}), "dataDir"),
        (
            json!({"type": "dnsname", "resolvConf": "/etc/../x"}),
            "resolvConf",
        ),
    ] {
        let net = Net::with_dns(dns);
        refused(&net, Some("a"), &[], 7, says);
        net.assert_clean(&[]);
    }
}

#[test]
fn port_53_taken_on_the_gateway_is_a_clear_error_and_leaves_nothing() {
    let net = Net::new();
    // Someone else's server on the gateway: the bridge must exist first, so one container
    // comes and goes on another network config without dnsname.
    let bridge_only = netns_fixtures::conflist("1.1.0", NET, vec![net.list.plugins[0].clone()]);
    let holder = net.h.container();
    let rt_h = holder.attachment("holder", "eth0");
    net.h.add(&bridge_only, &rt_h).unwrap();
    let taken = net.h.run(|| std::net::UdpSocket::bind((GW4, 53)).unwrap());
    let ctr = net.h.container();
    let rt = net.rt(&ctr, "c1", Some("alpha"), &[]);
    let e = net.h.add(&net.list, &rt).expect_err("port 53 is taken");
    assert_eq!(e.code, 999, "{e:?}");
    assert!(
        e.msg.contains("could not start")
            && e.msg.contains("10.77.0.1:53/udp")
            && e.msg.contains("in use"),
        "{}",
        e.msg
    );
    assert!(!net.dns_dir().join(NET).exists(), "nothing half-made");
    net.del(&rt);
    drop(taken);
    // Free again: the same ADD works.
    let (_c, rt2, _) = net.add("c2", "beta", &[]);
    let pid = net.server_pid().unwrap();
    net.del(&rt2);
    net.h.del(&bridge_only, &rt_h).unwrap();
    net.assert_clean(&[pid]);
}

#[test]
fn del_never_removes_what_it_did_not_make() {
    let net = Net::new();
    let foreign = net.dns_dir().join(NET);
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("precious"), "x").unwrap();
    // A DEL for a network whose directory is someone else's (no records.json): untouched.
    let ctr = net.h.container();
    net.del(&net.rt(&ctr, "nobody", Some("nobody"), &[]));
    assert!(foreign.join("precious").exists());
    // ADD into it, then the last DEL: our files and server go, the other file and so the
    // directory stay.
    let (_c, rt, _) = net.add("c1", "alpha", &[]);
    let pid = net.server_pid().unwrap();
    net.del(&rt);
    assert!(!alive(pid));
    let left: Vec<_> = std::fs::read_dir(&foreign)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("precious")]);
    std::fs::remove_dir_all(&foreign).unwrap();
    net.assert_clean(&[pid]);
}
