//! The fixtures must catch what they are meant to catch: each test here shows a detection.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::Duration;

use netns_fixtures::{
    CniHost, EchoServer, Netns, TestHost, assert_snapshot_eq, bin_dir, conflist, ping, plugin,
    reference_plugin, tcp_echo, udp_echo,
};
use serde_json::json;
use tether_netlink::{IpNetwork, RouteSpec};

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn sh(ns: &Netns, prog: &str, args: &[&str]) {
    let o = ns.command(prog).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A veth `h0` (host, 10.5.0.1/24, fd05::1/64) <-> `eth0` (container, .2 / ::2), both oper-up.
fn wire(host: &Netns, ctr: &Netns) {
    let h = host.netlink();
    let c = ctr.netlink();
    let hi = h
        .create_veth("h0", None, None, "eth0", ctr.as_fd(), None, None)
        .unwrap();
    let ci = c.link_by_name("eth0").unwrap().unwrap().index;
    c.set_up(ci).unwrap();
    h.add_addr(hi, net("10.5.0.1/24"), false).unwrap();
    h.add_addr(hi, net("fd05::1/64"), true).unwrap();
    c.add_addr(ci, net("10.5.0.2/24"), false).unwrap();
    c.add_addr(ci, net("fd05::2/64"), true).unwrap();
    // As add_outside: the first packet right after wiring must not meet a link the kernel has
    // not activated yet.
    host.wait_oper_up(hi);
    ctr.wait_oper_up(ci);
}

#[test]
fn snapshot_sees_links_addrs_routes_rules_and_files() {
    let host = TestHost::new();
    let ipam = host.ipam_dir();
    let before = host.snapshot(&[&ipam]);
    assert_snapshot_eq!(before, host.snapshot(&[&ipam]));
    assert_eq!(before.links, vec!["lo kind=- master=- up".to_string()]);

    let h = host.netlink();
    let br = h.create_bridge("tether0", None, false).unwrap();
    let with_link = host.snapshot(&[&ipam]);
    assert_ne!(before, with_link);
    let d = before.diff(&with_link);
    assert!(d.contains("+ tether0 kind=bridge master=- up"), "{d}");

    h.add_addr(br.index, net("10.9.0.1/24"), false).unwrap();
    h.add_route(&RouteSpec {
        gw: Some("10.9.0.7".parse().unwrap()),
        ..RouteSpec::new(net("192.0.2.0/24"))
    })
    .unwrap();
    sh(
        &host,
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "10.9.0.0/24",
            "-j",
            "MASQUERADE",
        ],
    );
    std::fs::create_dir_all(ipam.join("net1")).unwrap();
    std::fs::write(ipam.join("net1/10.9.0.2"), "c1\neth0").unwrap();
    let after = host.snapshot(&[&ipam]);
    let d = before.diff(&after);
    for want in [
        "+ tether0 10.9.0.1/24",
        "+ 192.0.2.0/24 via 10.9.0.7 dev tether0",
        "+ 10.9.0.0/24 dev tether0",
        "+ v4 -A POSTROUTING -s 10.9.0.0/24 -j MASQUERADE",
        "+ ipam/net1/10.9.0.2: \"c1\\neth0\"",
    ] {
        assert!(d.contains(want), "missing {want:?} in diff:\n{d}");
    }
    assert!(
        !d.contains("fe80"),
        "link-local noise must be filtered:\n{d}"
    );
    assert!(!d.contains("[0:0]"), "counters must be stripped:\n{d}");

    // Undo everything: equal again.
    sh(
        &host,
        "iptables",
        &[
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-s",
            "10.9.0.0/24",
            "-j",
            "MASQUERADE",
        ],
    );
    std::fs::remove_dir_all(ipam.join("net1")).unwrap();
    h.del_link(br.index).unwrap();
    assert_snapshot_eq!(before, host.snapshot(&[&ipam]), "after cleanup");
}

#[test]
#[should_panic(expected = "snapshots differ")]
fn assert_snapshot_eq_fails_on_a_difference() {
    let host = TestHost::new();
    let before = host.snapshot(&[]);
    sh(&host, "ip", &["link", "add", "x0", "type", "bridge"]);
    assert_snapshot_eq!(before, host.snapshot(&[]));
}

#[test]
fn echo_ping_across_a_veth() {
    let host = TestHost::new();
    let ctr = host.container();
    wire(&host, &ctr);

    let tcp = EchoServer::tcp(&ctr, "10.5.0.2:0".parse().unwrap());
    assert_eq!(tcp_echo(&host, tcp.addr(), b"hello").unwrap(), b"hello");
    let tcp6 = EchoServer::tcp(&ctr, "[fd05::2]:7000".parse().unwrap());
    let big = vec![7u8; 100_000];
    assert_eq!(tcp_echo(&host, tcp6.addr(), &big).unwrap(), big);
    let udp = EchoServer::udp(&host, "10.5.0.1:5353".parse().unwrap());
    assert_eq!(udp_echo(&ctr, udp.addr(), b"dgram").unwrap(), b"dgram");
    let udp6 = EchoServer::udp(&host, "[fd05::1]:0".parse().unwrap());
    assert_eq!(udp_echo(&ctr, udp6.addr(), b"six").unwrap(), b"six");

    let ips = |s: &EchoServer| -> Vec<IpAddr> { s.peers().iter().map(|p| p.ip()).collect() };
    assert_eq!(ips(&tcp), vec!["10.5.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(ips(&tcp6), vec!["fd05::1".parse::<IpAddr>().unwrap()]);
    assert_eq!(ips(&udp), vec!["10.5.0.2".parse::<IpAddr>().unwrap()]);
    assert_eq!(ips(&udp6), vec!["fd05::2".parse::<IpAddr>().unwrap()]);

    assert!(ping(&host, "10.5.0.2".parse().unwrap()));
    assert!(ping(&ctr, "fd05::1".parse().unwrap()));
    // Nothing listens / nothing answers: failures are reported, not hidden.
    assert!(tcp_echo(&host, "10.5.0.2:1".parse().unwrap(), b"x").is_err());
    assert!(!ping(&host, "10.5.0.99".parse().unwrap()));
    let addr = tcp.addr();
    drop(tcp);
    assert!(tcp_echo(&host, addr, b"x").is_err(), "server stops on drop");
}

#[test]
fn outside_sees_the_host_address_when_masqueraded() {
    let host = TestHost::new();
    let out = host.add_outside();
    let ctr = host.container();
    wire(&host, &ctr);
    let c = ctr.netlink();
    let ci = c.link_by_name("eth0").unwrap().unwrap().index;
    for (dst, gw) in [("0.0.0.0/0", "10.5.0.1"), ("::/0", "fd05::1")] {
        c.add_route(&RouteSpec {
            gw: Some(gw.parse().unwrap()),
            oif: Some(ci),
            ..RouteSpec::new(net(dst))
        })
        .unwrap();
    }
    host.set_sysctl("net.ipv4.ip_forward", "1");
    host.set_sysctl("net.ipv6.conf.all.forwarding", "1");
    assert_eq!(host.sysctl("net/ipv4/ip_forward"), "1");

    // The host reaches the outside directly, by its default routes.
    assert!(ping(&host, out.outside_v4.into()));
    assert!(ping(&host, out.outside_v6.into()));

    let srv = EchoServer::tcp(&out.ns, SocketAddr::new(out.outside_v4.into(), 8080));
    let srv6 = EchoServer::udp(&out.ns, SocketAddr::new(out.outside_v6.into(), 8080));
    // Without NAT, the outside would have to route 10.5.0.0/24 back: it cannot.
    assert!(tcp_echo(&ctr, srv.addr(), b"x").is_err());
    for (cmd, src) in [("iptables", "10.5.0.0/24"), ("ip6tables", "fd05::/64")] {
        sh(
            &host,
            cmd,
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                src,
                "-j",
                "MASQUERADE",
            ],
        );
    }
    assert_eq!(tcp_echo(&ctr, srv.addr(), b"out").unwrap(), b"out");
    assert_eq!(udp_echo(&ctr, srv6.addr(), b"out6").unwrap(), b"out6");
    assert_eq!(srv.peers().last().unwrap().ip(), IpAddr::from(out.host_v4));
    assert_eq!(srv6.peers().last().unwrap().ip(), IpAddr::from(out.host_v6));
}

#[test]
fn cni_runs_with_exactly_the_environment_given() {
    let host = TestHost::new();
    let out = host
        .cni("/usr/bin/env")
        .command("ADD")
        .container_id("c1")
        .netns(host.path())
        .ifname("eth0")
        .cni_path(["/a", "/b"])
        .args("K=V;X=Y")
        .env("EXTRA", "1")
        .run();
    assert_eq!(out.status, 0, "{out}");
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort();
    let ns = format!("CNI_NETNS={}", host.path().display());
    let mut want = vec![
        "CNI_ARGS=K=V;X=Y",
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=c1",
        "CNI_IFNAME=eth0",
        ns.as_str(),
        "CNI_PATH=/a:/b",
        "EXTRA=1",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ];
    want.sort();
    assert_eq!(lines, want);

    // The child runs inside the host namespace, not the test's.
    let script = executable(&host, "whereami", "readlink /proc/self/ns/net");
    let theirs = host.cni(&script).run();
    let host_ns = host.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
    assert_eq!(theirs.stdout.trim(), host_ns.to_str().unwrap(), "{theirs}");
    let mine = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(host_ns, mine);
}

/// A shell script `name` in the host's temp dir.
fn executable(host: &TestHost, name: &str, body: &str) -> std::path::PathBuf {
    script_in(host.dir(), name, body)
}

fn script_in(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn cni_against_a_reference_plugin() {
    let host = TestHost::new();
    let bridge = reference_plugin("bridge").expect("Debian's containernetworking-plugins");
    let v = host
        .cni(&bridge)
        .command("VERSION")
        .stdin(r#"{"cniVersion":"1.0.0"}"#)
        .run()
        .ok();
    assert!(v["supportedVersions"].as_array().unwrap().len() > 3, "{v}");

    // A bad config is a CNI error object with a code.
    let out = host.cni(&bridge).command("ADD").stdin("{not json").run();
    assert_ne!(out.status, 0);
    assert!(out.err_code().is_some(), "{out}");
    assert_eq!(
        host.cni(&bridge)
            .command("VERSION")
            .stdin("{}")
            .run()
            .err_code(),
        None
    );
}

#[test]
fn cni_timeout_kills_the_child() {
    let host = TestHost::new();
    let script = executable(&host, "hang", "echo started >&2\nexec sleep 30");
    let t0 = std::time::Instant::now();
    let out = host.cni(&script).timeout(Duration::from_millis(500)).run();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(out.timed_out && out.status == -1, "{out}");
    assert!(
        out.stderr.contains("started") && out.stderr.contains("timed out"),
        "{out}"
    );
}

#[test]
fn binaries_are_found_next_to_the_test_executable() {
    let dir = bin_dir();
    assert!(dir.join("deps").is_dir(), "{}", dir.display());
    let r = std::panic::catch_unwind(|| plugin("no-such-plugin"));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(
        msg.contains("build them first: cargo build --workspace --bins"),
        "{msg}"
    );
    assert!(reference_plugin("no-such-plugin").is_none());
}

#[test]
fn privileges_probe_passes_here() {
    // Running as root (or under `unshare -rn`): the probe must pass, twice, cheaply.
    netns_fixtures::require_privileges();
    netns_fixtures::require_privileges();
}

#[test]
fn cni_host_runs_conflists_and_single_plugins_inside_the_host() {
    let bridge = reference_plugin("bridge").expect("Debian's containernetworking-plugins");
    let ipam = reference_plugin("host-local").expect("Debian's containernetworking-plugins");
    // A chained plugin that shows what it was given: its config and part of its environment.
    let scripts = tempfile::tempdir().unwrap();
    let show = script_in(
        scripts.path(),
        "show",
        r#"printf '{"conf":'; cat; printf ',"args":"%s","netns":"%s","path":"%s"}' "$CNI_ARGS" "$CNI_NETNS" "$CNI_PATH""#,
    );
    let fail = script_in(
        scripts.path(),
        "fail",
        r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":7,"msg":"nope"}'; exit 1"#,
    );
    let t = CniHost::new(&[
        ("bridge", bridge.as_path()),
        ("host-local", ipam.as_path()),
        ("show", show.as_path()),
        ("fail", fail.as_path()),
    ]);
    let ctr = t.container();
    let list = conflist("1.0.0", "fnet", vec![t.bridge_conf("10.77.0.0/24")]);
    let att = ctr.attachment("c1", "eth0");
    assert_eq!(att.netns, ctr.path());

    let r = t.add(&list, &att).expect("ADD");
    let ip = r.ips[0].address.ip();
    assert!(ip.to_string().starts_with("10.77.0."), "{r:?}");
    let addrs = ctr.ip_json(&["addr", "show", "dev", "eth0"]);
    assert_eq!(addrs[0]["addr_info"][0]["local"], ip.to_string(), "{addrs}");
    // The bridge and the lease are the fake host's.
    assert_eq!(
        t.host.ip_json(&["link", "show", "tbr0"])[0]["ifname"],
        "tbr0"
    );
    assert!(t.ipam_dir().join("fnet").join(ip.to_string()).is_file());
    t.check(&list, &att).expect("CHECK");

    let mut att_args = att.clone();
    att_args.args = vec![("K".into(), "V".into()), ("X".into(), "Y".into())];
    let shown = t
        .exec(
            &json!({"type": "show", "x": 1}),
            "ADD",
            "0.4.0",
            "fnet",
            &att_args,
            Some(&r),
        )
        .expect("show")
        .expect("output");
    assert_eq!(shown["conf"]["cniVersion"], "0.4.0", "{shown}");
    assert_eq!(shown["conf"]["name"], "fnet");
    assert_eq!(shown["conf"]["x"], 1);
    // prevResult is converted to the list's version.
    assert_eq!(
        shown["conf"]["prevResult"]["cniVersion"], "0.4.0",
        "{shown}"
    );
    assert_eq!(shown["args"], "K=V;X=Y");
    assert_eq!(shown["netns"], ctr.path().display().to_string());
    assert_eq!(shown["path"], t.bin_dir().display().to_string());

    // A plugin's CNI error comes back as it printed it.
    let e = t
        .exec(&json!({"type": "fail"}), "ADD", "1.0.0", "fnet", &att, None)
        .expect_err("fail fails");
    assert_eq!((e.code, e.msg.as_str()), (7, "nope"), "{e:?}");

    t.del(&list, &att).expect("DEL");
    let links = ctr.ip_json(&["link", "show"]);
    assert_eq!(links.as_array().unwrap().len(), 1, "only lo: {links}");
}

#[test]
fn sh_returns_stdout_and_fails_loudly() {
    let ns = Netns::new().unwrap();
    assert!(ns.sh("ip", &["-o", "link", "show", "lo"]).contains("lo:"));
    let e = std::panic::catch_unwind(|| ns.sh("ip", &["link", "show", "nope0"])).unwrap_err();
    let msg = *e.downcast::<String>().unwrap();
    assert!(msg.contains("failed") && msg.contains("nope0"), "{msg}");
    assert_eq!(ns.ip_json(&["link", "show", "lo"])[0]["ifname"], "lo");
}
