//! Bad input is refused before anything is created, with the kit's codes.

mod common;

use common::*;
use serde_json::json;

#[test]
fn bad_network_names_missing_keys_and_a_too_large_mtu_are_refused_cleanly() {
    let h = Host::leased();
    let before = h.snapshot();
    let ctr = h.th.container();
    let mut missing = h.conf(json!({}));
    missing.as_object_mut().unwrap().remove("network");
    let cases = [
        (missing, 7, "missing \"network\""),
        (
            h.conf(json!({"network": "../etc"})),
            7,
            "invalid \"network\"",
        ),
        (h.conf(json!({"network": 5})), 7, "invalid \"network\""),
        (h.conf(json!({"mtu": 1451})), 7, "above the overlay's 1450"),
        (h.conf(json!({"mtu": "big"})), 7, "invalid \"mtu\""),
        (h.conf(json!({"bridge": "br0"})), 2, "bridge"),
        (h.conf(json!({"ipam": {"type": "dhcp"}})), 2, "ipam"),
    ];
    for (conf, code, msg) in cases {
        let out = h.add(&ctr, "c1", &conf);
        assert_eq!(out.err_code(), Some(code), "{conf}: {out}");
        let text = out.json()["msg"].as_str().unwrap_or_default().to_string();
        assert!(text.contains(msg), "{conf}: {out}");
        // DEL of what ADD refused succeeds (a malformed value is still code 7).
        let del = h.del("c1", &conf, None);
        assert!(
            del.status == 0 || del.err_code() == Some(7),
            "{conf}: {del}"
        );
    }
    // A corrupt lease file: a local file error (5), naming it.
    std::fs::write(h.dir().lease_file(), "{nope").unwrap();
    let out = h.add(&ctr, "c1", &h.conf(json!({})));
    assert_eq!(out.err_code(), Some(5), "{out}");
    assert!(out.stdout.contains("lease.json"), "{out}");
    h.write_lease(&h.lease("10.200.3.0/24"));
    assert!(ctr.netlink().link_by_name("eth0").unwrap().is_none());
    assert_nothing_left(&before, &h.snapshot());
}

#[test]
fn a_second_add_of_the_same_attachment_is_refused_and_keeps_the_first() {
    let h = Host::leased();
    let conf = h.conf(json!({}));
    let before = h.snapshot();
    let ctr = h.th.container();
    let r = h.add(&ctr, "c1", &conf).ok();
    let out = h.add(&ctr, "c1", &conf);
    assert_eq!(out.err_code(), Some(4), "{out}");
    h.check(&ctr, "c1", &conf, &r).ok_empty();
    h.del("c1", &conf, Some(&r)).ok_empty();
    assert_nothing_left(&before, &h.snapshot());
}

#[test]
fn a_failing_delegate_rolls_back_the_record_and_the_masquerading() {
    let h = Host::leased();
    // Something not a bridge already has the bridge's name: bridge refuses (code 7).
    h.ns().sh(
        "ip",
        &[
            "link", "add", BRIDGE, "type", "veth", "peer", "name", "tob-42p",
        ],
    );
    let conf = h.conf(json!({}));
    let before = h.snapshot();
    let ctr = h.th.container();
    let out = h.add(&ctr, "c1", &conf);
    assert_eq!(out.err_code(), Some(7), "{out}");
    assert!(out.stdout.contains("not a bridge"), "{out}");
    assert!(h.records().is_empty());
    assert!(h.masq_lines().is_empty(), "{:#?}", h.masq_lines());
    assert!(ctr.netlink().link_by_name("eth0").unwrap().is_none());
    assert_nothing_left(&before, &h.snapshot());
}
