//! Behaviour of the mode plugins (`loopback`, `none`, `host`, `container`) beyond the protocol:
//! what they do to the kernel, what they report, and what they refuse.

mod common;

use common::*;
use serde_json::{Value, json};

fn conf(plugin: &str, version: &str) -> Value {
    json!({"cniVersion": version, "name": "testnet", "type": plugin})
}

/// An invocation of `plugin` run inside `host` against the namespace at `netns`.
fn cni<'a>(plugin: &str, host: &'a Netns, command: &str, netns: &str) -> Cni<'a> {
    host.cni(common::plugin(plugin))
        .command(command)
        .container_id("ctr1")
        .netns(netns)
        .ifname("eth0")
        .cni_path([bin_dir()])
}

/// The result loopback and none must give for a namespace whose `lo` has both families.
fn lo_only_result(version: &str, netns: &str) -> Value {
    json!({
        "cniVersion": version,
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": netns}],
        "ips": [
            {"interface": 0, "address": "127.0.0.1/8"},
            {"interface": 0, "address": "::1/128"},
        ],
        "dns": {},
    })
}

// ---------------------------------------------------------------------------------------------
// loopback and none

fn sets_lo_up_and_reports_only_lo(p: &str) {
    let host = TestHost::new();
    let ctr = host.container();
    // Something besides lo, which must not show up in the result.
    add_global_addrs(&ctr, CTR_V4, CTR_V6);
    set_lo(&ctr, false);
    assert!(!lo_is_up(&ctr));
    let path = ctr.path().display().to_string();
    let r = cni(p, &host, "ADD", &path)
        .stdin(conf(p, "1.0.0"))
        .run_checked()
        .ok();
    assert!(lo_is_up(&ctr), "{p} ADD must set lo up");
    assert_eq!(r, lo_only_result("1.0.0", &path), "{p}");
    // CHECK passes while lo is up, fails once it is down.
    let mut check = conf(p, "1.0.0");
    check["prevResult"] = r.clone();
    cni(p, &host, "CHECK", &path)
        .stdin(&check)
        .run_checked()
        .ok_empty();
    set_lo(&ctr, false);
    let e = cni(p, &host, "CHECK", &path)
        .stdin(&check)
        .run_checked()
        .err();
    assert!(e["msg"].as_str().unwrap().contains("lo is down"), "{e}");
}

#[test]
fn loopback_sets_lo_up_and_reports_only_lo() {
    sets_lo_up_and_reports_only_lo("loopback");
}

#[test]
fn none_sets_lo_up_and_reports_only_lo() {
    sets_lo_up_and_reports_only_lo("none");
}

/// In the 0.1.0/0.2.0 shape the same addresses come out as ip4/ip6 (CRI-O asks for these).
#[test]
fn loopback_legacy_versions_use_ip4_ip6() {
    let host = TestHost::new();
    let ctr = host.container();
    let path = ctr.path().display().to_string();
    for v in ["0.1.0", "0.2.0"] {
        let r = cni("loopback", &host, "ADD", &path)
            .stdin(conf("loopback", v))
            .run_checked()
            .ok();
        assert_eq!(
            r,
            json!({"cniVersion": v, "ip4": {"ip": "127.0.0.1/8"}, "ip6": {"ip": "::1/128"}, "dns": {}})
        );
    }
}

/// Without IPv6 in the namespace the result has only the v4 address (as the reference).
#[test]
fn loopback_without_ipv6() {
    for p in ["loopback", "none"] {
        let host = TestHost::new();
        let ctr = host.container();
        ctr.set_sysctl("net.ipv6.conf.lo.disable_ipv6", "1");
        let path = ctr.path().display().to_string();
        let r = cni(p, &host, "ADD", &path)
            .stdin(conf(p, "1.0.0"))
            .run_checked()
            .ok();
        assert_eq!(
            r["ips"],
            json!([{"interface": 0, "address": "127.0.0.1/8"}]),
            "{p}"
        );
    }
}

/// The reference refuses an `lo` carrying a non-loopback address: something is badly wrong.
#[test]
fn loopback_refuses_non_loopback_address_on_lo() {
    let host = TestHost::new();
    let ctr = host.container();
    add_lo_addr(&ctr, "10.1.2.3/32");
    let path = ctr.path().display().to_string();
    let e = cni("loopback", &host, "ADD", &path)
        .stdin(conf("loopback", "1.0.0"))
        .run_checked()
        .err();
    assert!(e["msg"].as_str().unwrap().contains("10.1.2.3"), "{e}");
}

#[test]
fn loopback_del_sets_lo_down_and_tolerates_missing_netns() {
    let host = TestHost::new();
    let ctr = host.container();
    let path = ctr.path().display().to_string();
    let c = conf("loopback", "1.0.0");
    cni("loopback", &host, "ADD", &path)
        .stdin(&c)
        .run_checked()
        .ok();
    assert!(lo_is_up(&ctr));
    cni("loopback", &host, "DEL", &path)
        .stdin(&c)
        .run_checked()
        .ok_empty();
    assert!(!lo_is_up(&ctr), "loopback DEL sets lo down");
    cni("loopback", &host, "DEL", &path)
        .stdin(&c)
        .run_checked()
        .ok_empty();
    cni("loopback", &host, "DEL", MISSING_NETNS)
        .stdin(&c)
        .run_checked()
        .ok_empty();
    cni("loopback", &host, "DEL", "")
        .stdin(&c)
        .run_checked()
        .ok_empty();
}

/// `none`'s DEL is a no-op: the namespace dies with the container.
#[test]
fn none_del_changes_nothing() {
    let host = TestHost::new();
    let ctr = host.container();
    let path = ctr.path().display().to_string();
    let c = conf("none", "1.0.0");
    cni("none", &host, "ADD", &path)
        .stdin(&c)
        .run_checked()
        .ok();
    let before = ctr.snapshot(&[]);
    cni("none", &host, "DEL", &path)
        .stdin(&c)
        .run_checked()
        .ok_empty();
    assert!(lo_is_up(&ctr));
    assert_snapshot_eq(&before, &ctr.snapshot(&[]));
    cni("none", &host, "DEL", MISSING_NETNS)
        .stdin(&c)
        .run_checked()
        .ok_empty();
}

/// Every mode plugin passes a `prevResult` through, whatever version it came in.
#[test]
fn mode_plugins_pass_prev_result_through() {
    let prev = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.5.0.7/16", "gateway": "10.5.0.1"}});
    for p in ["loopback", "none", "host", "container"] {
        let host = TestHost::new();
        let ctr = host.container();
        let path = if p == "host" { host.path() } else { ctr.path() };
        let mut c = conf(p, "1.0.0");
        c["prevResult"] = prev.clone();
        let r = cni(p, &host, "ADD", &path.display().to_string())
            .stdin(&c)
            .run_checked()
            .ok();
        assert_eq!(
            r,
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.5.0.7/16", "gateway": "10.5.0.1"}], "dns": {}}),
            "{p}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// host

/// Gives the fake host addresses and default routes, returns it.
fn host_with_network() -> TestHost {
    let host = TestHost::new();
    add_global_addrs(&host, HOST_V4, HOST_V6);
    add_default_route(&host, "10.99.0.254");
    add_default_route(&host, "fd99::fe");
    host
}

fn assert_describes_host(r: &Value, sandbox: Option<&str>) {
    let ifs = r["interfaces"].as_array().expect("interfaces");
    let names: Vec<&str> = ifs.iter().map(|i| i["name"].as_str().unwrap()).collect();
    for want in ["lo", "v0", "v1"] {
        assert!(names.contains(&want), "{want} missing: {r}");
    }
    for i in ifs {
        assert_eq!(i["sandbox"].as_str(), sandbox, "{r}");
        assert!(i["mac"].is_string(), "{r}");
    }
    let v0 = names.iter().position(|n| *n == "v0").unwrap();
    let ips = r["ips"].as_array().expect("ips");
    let addrs: Vec<&str> = ips.iter().map(|i| i["address"].as_str().unwrap()).collect();
    let (v4, v6) = if sandbox.is_some() {
        (CTR_V4, CTR_V6)
    } else {
        (HOST_V4, HOST_V6)
    };
    // Exactly the global addresses: no 127.0.0.1, no ::1, no fe80::.
    let mut sorted = addrs.clone();
    sorted.sort();
    assert_eq!(sorted, [v4, v6], "{r}");
    for ip in ips {
        assert_eq!(ip["interface"], v0, "{r}");
    }
}

#[test]
fn host_accepts_its_own_namespace_and_reports_it() {
    let host = host_with_network();
    let before = host.snapshot(&[]);
    // The plugin's own namespace by the fd path the runtime would pass...
    let path = host.path().display().to_string();
    let r = cni("host", &host, "ADD", &path)
        .stdin(conf("host", "1.1.0"))
        .run_checked()
        .ok();
    assert_describes_host(&r, None);
    let routes = r["routes"].as_array().expect("default routes");
    assert!(
        routes.contains(&json!({"dst": "0.0.0.0/0", "gw": "10.99.0.254"})),
        "{r}"
    );
    assert!(
        routes.contains(&json!({"dst": "::/0", "gw": "fd99::fe"})),
        "{r}"
    );
    let mut c = conf("host", "1.1.0");
    c["prevResult"] = r.clone();
    cni("host", &host, "CHECK", &path)
        .stdin(&c)
        .run_checked()
        .ok_empty();
    cni("host", &host, "DEL", &path)
        .stdin(&c)
        .run_checked()
        .ok_empty();
    // Host mode creates and deletes nothing.
    assert_snapshot_eq(&before, &host.snapshot(&[]));
    // ...and by /proc/self/ns/net, which resolves inside the plugin process itself.
    let r = cni("host", &host, "ADD", "/proc/self/ns/net")
        .stdin(conf("host", "1.0.0"))
        .run_checked()
        .ok();
    assert_describes_host(&r, None);
    assert_snapshot_eq(&before, &host.snapshot(&[]));
}

#[test]
fn host_refuses_any_other_namespace() {
    let host = host_with_network();
    let ctr = host.container();
    let (host_before, ctr_before) = (host.snapshot(&[]), ctr.snapshot(&[]));
    let path = ctr.path().display().to_string();
    for cmd in ["ADD", "CHECK"] {
        let e = cni("host", &host, cmd, &path)
            .stdin(conf("host", "1.0.0"))
            .run_checked()
            .err();
        assert_eq!(e["code"], 4, "{e}");
        let msg = e["msg"].as_str().unwrap();
        assert!(msg.contains("host's own network namespace"), "{e}");
        assert!(msg.contains(&path), "{e}");
    }
    // The host's namespace seen from a plugin running elsewhere is refused too: the comparison is
    // with the plugin's own namespace, not with some fixed path.
    let e = cni("host", &ctr, "ADD", &host.path().display().to_string())
        .stdin(conf("host", "1.0.0"))
        .run_checked()
        .err();
    assert_eq!(e["code"], 4, "{e}");
    // DEL creates nothing and deletes nothing: it succeeds for any namespace.
    cni("host", &host, "DEL", &path)
        .stdin(conf("host", "1.0.0"))
        .run_checked()
        .ok_empty();
    assert_snapshot_eq(&host_before, &host.snapshot(&[]));
    assert_snapshot_eq(&ctr_before, &ctr.snapshot(&[]));
}

// ---------------------------------------------------------------------------------------------
// container

#[test]
fn container_reports_target_addresses_and_del_leaves_them() {
    let host = TestHost::new();
    let ctr = host.container();
    add_global_addrs(&ctr, CTR_V4, CTR_V6);
    add_default_route(&ctr, "10.99.1.1");
    let host_before = host.snapshot(&[]);
    let before = ctr.snapshot(&[]);
    let path = ctr.path().display().to_string();
    let c = conf("container", "1.1.0");
    let r = cni("container", &host, "ADD", &path)
        .stdin(&c)
        .run_checked()
        .ok();
    assert_describes_host(&r, Some(&path));
    assert!(
        r["routes"]
            .as_array()
            .unwrap()
            .contains(&json!({"dst": "0.0.0.0/0", "gw": "10.99.1.1"})),
        "{r}"
    );
    // ADD creates nothing.
    assert_snapshot_eq(&before, &ctr.snapshot(&[]));
    let mut check = c.clone();
    check["prevResult"] = r;
    cni("container", &host, "CHECK", &path)
        .stdin(&check)
        .run_checked()
        .ok_empty();
    cni("container", &host, "DEL", &path)
        .stdin(&check)
        .run_checked()
        .ok_empty();
    // DEL never touches the target.
    assert_snapshot_eq(&before, &ctr.snapshot(&[]));
    assert_snapshot_eq(&host_before, &host.snapshot(&[]));
}

/// The target container's namespace must be alive: once its last process is gone, ADD and CHECK
/// say so (code 3, container unknown) while DEL still succeeds.
#[test]
fn container_needs_a_live_target() {
    let host = TestHost::new();
    let ctr = host.container();
    let mut holder = Holder(
        ctr.command("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep in the target namespace"),
    );
    let path = format!("/proc/{}/ns/net", holder.0.id());
    drop(ctr); // the sleeping process now holds the namespace alone
    let c = conf("container", "1.0.0");
    let r = cni("container", &host, "ADD", &path)
        .stdin(&c)
        .run_checked()
        .ok();
    assert_eq!(r["interfaces"][0]["sandbox"], path.as_str(), "{r}");
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    for cmd in ["ADD", "CHECK"] {
        let e = cni("container", &host, cmd, &path)
            .stdin(&c)
            .run_checked()
            .err();
        assert_eq!(e["code"], 3, "{cmd}: {e}");
    }
    cni("container", &host, "DEL", &path)
        .stdin(&c)
        .run_checked()
        .ok_empty();
}

/// Our own child process, killed (by its pid) if the test ends early.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
