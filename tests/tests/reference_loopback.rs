//! Side by side: our `loopback` and Debian's reference `/usr/lib/cni/loopback` on identical
//! namespaces, for every spec version. They must give results of the same content and leave the
//! kernel in the same state.
//!
//! Known difference, kept on purpose: the reference (containernetworking/plugins 1.1.1) labels its
//! 1.0.0-shaped result with the requested version without converting it, so for 0.1.0/0.2.0 it
//! prints `interfaces`/`ips` instead of `ip4`/`ip6`, and for 0.3.x/0.4.0 it omits `ips[].version`.
//! Ours prints each version's real shape; the test compares the content across that difference.

mod common;

use common::*;
use serde_json::{Value, json};

fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "lo-net", "type": "loopback"})
}

fn reference() -> std::path::PathBuf {
    reference_plugin("loopback").expect(
        "Debian's reference plugins are required for this test: apt-get install containernetworking-plugins",
    )
}

/// The versions the installed reference accepts (Debian bookworm's stops at 1.0.0).
fn reference_versions() -> Vec<String> {
    let host = TestHost::new();
    let v = host.cni(reference()).command("VERSION").run_checked().ok();
    v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A result's content as (interfaces, addresses), whatever shape it is written in.
fn content(r: &Value) -> (Value, Vec<String>) {
    let addrs = match r.get("ips") {
        Some(ips) => ips
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                assert_eq!(i["interface"], 0, "{r}");
                i["address"].as_str().unwrap().to_string()
            })
            .collect(),
        None => ["ip4", "ip6"]
            .iter()
            .filter_map(|k| r[k]["ip"].as_str().map(str::to_string))
            .collect(),
    };
    (r.get("interfaces").cloned().unwrap_or(Value::Null), addrs)
}

#[test]
fn same_results_and_kernel_state_as_reference() {
    let ref_versions = reference_versions();
    assert!(ref_versions.len() >= 6, "{ref_versions:?}");
    let host = TestHost::new();
    for v in VERSIONS {
        let ours_ns = netns();
        let theirs_ns = netns();
        for ns in [&ours_ns, &theirs_ns] {
            set_lo(ns, false);
        }
        // The same CNI_NETNS spelling for both, so that `sandbox` compares equal.
        let run = |bin: std::path::PathBuf, ns: &Netns, cmd: &str, c: &Value| {
            host.cni(bin)
                .command(cmd)
                .container_id("c1")
                .netns(ns.path())
                .ifname("eth0")
                .cni_path(["/usr/lib/cni"])
                .stdin(c)
                .run_checked()
        };
        let ours = run(plugin("loopback"), &ours_ns, "ADD", &conf(v)).ok();
        assert_eq!(ours["cniVersion"], *v);
        assert!(lo_is_up(&ours_ns));
        if !ref_versions.iter().any(|r| r == v) {
            // Newer than the reference: ours must still answer, with the same content as 1.0.0.
            let (ifs, addrs) = content(&ours);
            assert_eq!(addrs, ["127.0.0.1/8", "::1/128"]);
            assert_eq!(ifs[0]["name"], "lo");
            continue;
        }
        let theirs = run(reference(), &theirs_ns, "ADD", &conf(v)).ok();
        assert!(lo_is_up(&theirs_ns));
        assert_eq!(theirs["cniVersion"], *v);
        let (our_ifs, our_addrs) = content(&ours);
        let (their_ifs, their_addrs) = content(&theirs);
        assert_eq!(
            our_addrs, their_addrs,
            "{v}: ours {ours} vs reference {theirs}"
        );
        assert_eq!(ours["dns"], theirs["dns"], "{v}");
        if cni::version::at_least(v, "0.3.0") {
            // Same interfaces, except for the sandbox path, which names each one's namespace.
            let strip = |ifs: &Value| {
                let mut ifs = ifs.clone();
                ifs[0]["sandbox"] = Value::Null;
                ifs
            };
            assert_eq!(strip(&our_ifs), strip(&their_ifs), "{v}");
            assert_eq!(our_ifs[0]["sandbox"], ours_ns.path().to_str().unwrap());
            assert_eq!(their_ifs[0]["sandbox"], theirs_ns.path().to_str().unwrap());
            // And, apart from `ips[].version` (which only ours adds, as 0.3.x/0.4.0 require),
            // the documents are identical.
            let mut o = ours.clone();
            for ip in o["ips"].as_array_mut().unwrap() {
                ip.as_object_mut().unwrap().remove("version");
            }
            o["interfaces"] = strip(&our_ifs);
            let mut t = theirs.clone();
            t["interfaces"] = strip(&their_ifs);
            assert_eq!(o, t, "{v}");
        }
        for (bin, ns, result) in [
            (plugin("loopback"), &ours_ns, &ours),
            (reference(), &theirs_ns, &theirs),
        ] {
            let mut c = conf(v);
            c["prevResult"] = result.clone();
            if cni::version::at_least(v, "0.4.0") {
                run(bin.clone(), ns, "CHECK", &c).ok_empty();
            }
            run(bin, ns, "DEL", &c).ok_empty();
            assert!(!lo_is_up(ns), "{v}: DEL sets lo down");
        }
    }
}

/// Both refuse an `lo` with a non-loopback address, and both tolerate DEL of a vanished namespace.
#[test]
fn same_failures_as_reference() {
    let host = TestHost::new();
    for bin in [plugin("loopback"), reference()] {
        let ctr = netns();
        add_lo_addr(&ctr, "192.0.2.9/32");
        let out = host
            .cni(&bin)
            .command("ADD")
            .container_id("c1")
            .netns(ctr.path())
            .ifname("eth0")
            .cni_path(["/usr/lib/cni"])
            .stdin(conf("1.0.0"))
            .run_checked();
        assert!(
            out.err()["msg"].as_str().unwrap().contains("192.0.2.9"),
            "{}: {out:#?}",
            bin.display()
        );
        host.cni(&bin)
            .command("DEL")
            .container_id("c1")
            .netns(MISSING_NETNS)
            .ifname("eth0")
            .cni_path(["/usr/lib/cni"])
            .stdin(conf("1.0.0"))
            .run_checked()
            .ok_empty();
    }
}
