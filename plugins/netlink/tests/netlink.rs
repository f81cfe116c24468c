//! Every test works inside its own throwaway namespaces and cross-checks what it can with `ip`.

use std::net::IpAddr;
use std::os::fd::AsFd;

use netns_fixtures::Netns;
use tether_netlink::{
    Error, IFA_F_NODAD, IFA_F_TENTATIVE, IpNetwork, NsHandle, RTPROT_BOOT, RTPROT_STATIC,
    RouteSpec, VethSpec, format_mac, open_netns, parse_mac, sysctl_get, sysctl_set,
};

fn netns() -> Netns {
    Netns::new().expect("cannot create a network namespace (tests need root or `unshare -rn`)")
}

fn handle(ns: &Netns) -> NsHandle {
    NsHandle::for_netns(ns.as_fd()).expect("netlink handle in test namespace")
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// `ip ARGS` inside `ns`, asserting success.
fn ip(ns: &Netns, args: &[&str]) -> String {
    let out = ns.command("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ip_json(ns: &Netns, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    serde_json::from_str(&ip(ns, &all)).unwrap()
}

#[test]
fn bridge_and_veth_with_peer_born_in_the_container() {
    let host = netns();
    let ctr = netns();
    let h = handle(&host);
    let c = handle(&ctr);

    let br = h.create_bridge("br0", Some(1400), false).unwrap();
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert!(br.up, "bridges are created up");
    assert_eq!(br.mtu, 1400);
    let d = ip_json(&host, &["-d", "link", "show", "br0"]);
    assert_eq!(d[0]["linkinfo"]["info_data"]["vlan_filtering"], 0, "{d}");
    // VLAN filtering is a kernel build option (off on the CI kernel): either it is on, or the
    // request fails cleanly and creates nothing.
    match h.create_bridge("brv", None, true) {
        Ok(_) => {
            let d = ip_json(&host, &["-d", "link", "show", "brv"]);
            assert_eq!(d[0]["linkinfo"]["info_data"]["vlan_filtering"], 1, "{d}");
            assert!(h.del_link_by_name("brv").unwrap());
        }
        Err(e) => {
            assert_eq!(e.errno(), Some(libc::EOPNOTSUPP), "{e}");
            assert!(h.link_by_name("brv").unwrap().is_none());
        }
    }
    assert!(matches!(
        h.create_bridge("br0", None, false),
        Err(Error::Exists(m)) if m.contains("br0")
    ));

    let mac = parse_mac("0a:58:0a:01:00:02").unwrap();
    let idx = h
        .create_veth(
            "veth0",
            Some(1400),
            Some(br.index),
            "eth0",
            ctr.as_fd(),
            Some(mac),
            Some(1300),
        )
        .unwrap();

    let hv = h.link_by_index(idx).unwrap().expect("host end");
    assert_eq!(hv.name, "veth0");
    assert_eq!(hv.kind.as_deref(), Some("veth"));
    assert_eq!(hv.master, Some(br.index));
    assert!(hv.up);
    assert_eq!(hv.mtu, 1400);
    assert!(
        hv.link_netnsid.is_some(),
        "peer lives in another netns: {hv:?}"
    );
    assert_eq!(hv.bridge_port, Some(Default::default()));
    assert!(
        h.link_by_name("eth0").unwrap().is_none(),
        "peer must not appear in the host"
    );

    let cv = c
        .link_by_name("eth0")
        .unwrap()
        .expect("peer created in the container");
    assert_eq!(cv.kind.as_deref(), Some("veth"));
    assert_eq!(cv.mac, Some(mac));
    assert_eq!(cv.mtu, 1300);
    assert!(!cv.up, "the peer is left down");
    assert_eq!(cv.peer_index, Some(idx));
    // Independent view through iproute2.
    let j = ip_json(&ctr, &["link", "show", "eth0"]);
    assert_eq!(j[0]["address"], "0a:58:0a:01:00:02");
    let j = ip_json(&host, &["link", "show", "veth0"]);
    assert_eq!(j[0]["master"], "br0");

    // Same names again: EEXIST on the host end.
    assert!(matches!(
        h.create_veth("veth0", None, None, "eth1", ctr.as_fd(), None, None),
        Err(Error::Exists(_))
    ));
    // Host name free, peer name taken inside the container: still Exists, and nothing is left
    // behind on the host.
    assert!(matches!(
        h.create_veth("veth1", None, None, "eth0", ctr.as_fd(), None, None),
        Err(Error::Exists(_))
    ));
    assert!(h.link_by_name("veth1").unwrap().is_none());

    // Bridge-port options, read back through netlink and iproute2.
    h.set_bridge_port(idx, Some(true), Some(true)).unwrap();
    let port = h.link_by_index(idx).unwrap().unwrap().bridge_port.unwrap();
    assert!(port.hairpin && port.isolated, "{port:?}");
    let d = ip_json(&host, &["-d", "link", "show", "veth0"]);
    assert_eq!(d[0]["linkinfo"]["info_slave_data"]["hairpin"], true, "{d}");
    assert_eq!(d[0]["linkinfo"]["info_slave_data"]["isolated"], true, "{d}");
    h.set_bridge_port(idx, Some(false), None).unwrap();
    let port = h.link_by_index(idx).unwrap().unwrap().bridge_port.unwrap();
    assert!(
        !port.hairpin && port.isolated,
        "None leaves isolated alone: {port:?}"
    );

    // Changes.
    c.set_up(cv.index).unwrap();
    c.set_mtu(cv.index, 1280).unwrap();
    let mac2 = [0x0a, 0x58, 0, 0, 0, 9];
    c.set_mac(cv.index, mac2).unwrap();
    c.set_promisc(cv.index, true).unwrap();
    let cv2 = c.link_by_index(cv.index).unwrap().unwrap();
    assert!(cv2.up && cv2.promisc);
    assert_eq!((cv2.mtu, cv2.mac), (1280, Some(mac2)));
    assert_eq!(format_mac(cv2.mac.unwrap()), "0a:58:00:00:00:09");
    c.set_promisc(cv.index, false).unwrap();
    c.set_down(cv.index).unwrap();
    let cv3 = c.link_by_index(cv.index).unwrap().unwrap();
    assert!(!cv3.up && !cv3.promisc);
    h.set_master(idx, 0).unwrap();
    assert_eq!(h.link_by_index(idx).unwrap().unwrap().master, None);
    h.set_master(idx, br.index).unwrap();
    assert_eq!(
        h.link_by_index(idx).unwrap().unwrap().master,
        Some(br.index)
    );

    // links() sees everything; deleting one end removes both.
    let names: Vec<String> = h.links().unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for n in ["lo", "br0", "veth0"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    h.del_link(idx).unwrap();
    assert!(
        c.link_by_name("eth0").unwrap().is_none(),
        "peer goes with its host end"
    );
    assert!(matches!(h.del_link(idx), Err(Error::NotFound(m)) if m.contains(&idx.to_string())));
    assert!(h.del_link_by_name("br0").unwrap());
    assert!(!h.del_link_by_name("br0").unwrap());
    assert_eq!(h.links().unwrap().len(), 1);
}

#[test]
fn missing_links_are_none_or_not_found() {
    let ns = netns();
    let h = handle(&ns);
    assert!(h.link_by_name("nope0").unwrap().is_none());
    assert!(h.link_by_index(4242).unwrap().is_none());
    for r in [h.set_up(4242), h.set_mtu(4242, 1500), h.del_link(4242)] {
        assert!(
            matches!(r, Err(Error::NotFound(ref m)) if m.contains("#4242")),
            "{r:?}"
        );
    }
    assert!(matches!(
        h.add_addr(4242, net("10.0.0.1/24"), false),
        Err(Error::NotFound(_))
    ));
}

/// A veth pair `a`/`b`, both up, inside `ns` (peer born in the same namespace).
fn pair(ns: &Netns, h: &NsHandle) -> u32 {
    let a = h
        .create_veth("a", None, None, "b", ns.as_fd(), None, None)
        .unwrap();
    let b = h.link_by_name("b").unwrap().unwrap().index;
    h.set_up(b).unwrap();
    a
}

#[test]
fn addresses_v4_and_v6_nodad() {
    let ns = netns();
    let h = handle(&ns);
    let a = pair(&ns, &h);

    h.add_addr(a, net("10.1.0.2/24"), false).unwrap();
    h.add_addr(a, net("fd00:1::2/64"), true).unwrap();
    let addrs = h.addrs(Some(a)).unwrap();
    let v4 = addrs
        .iter()
        .find(|x| x.net == net("10.1.0.2/24"))
        .expect("v4");
    assert_eq!((v4.index, v4.scope), (a, 0));
    let v6 = addrs
        .iter()
        .find(|x| x.net == net("fd00:1::2/64"))
        .expect("v6");
    assert!(v6.flags & IFA_F_NODAD != 0, "{v6:?}");
    assert!(
        v6.flags & IFA_F_TENTATIVE == 0,
        "nodad: usable at once: {v6:?}"
    );
    // Other links' addresses are filtered out, and the unfiltered list has them all.
    assert!(addrs.iter().all(|x| x.index == a));
    let lo = h.link_by_name("lo").unwrap().unwrap().index;
    assert!(h.addrs(None).unwrap().iter().any(|x| x.index == lo));

    // iproute2 agrees, including the v4 broadcast.
    let j = ip_json(&ns, &["addr", "show", "dev", "a"]);
    let infos = j[0]["addr_info"].as_array().unwrap();
    let v4j = infos.iter().find(|i| i["local"] == "10.1.0.2").unwrap();
    assert_eq!(v4j["broadcast"], "10.1.0.255");
    assert!(infos.iter().any(|i| i["local"] == "fd00:1::2"));

    assert!(matches!(
        h.add_addr(a, net("10.1.0.2/24"), false),
        Err(Error::Exists(m)) if m.contains("10.1.0.2/24")
    ));
    h.del_addr(a, net("10.1.0.2/24")).unwrap();
    h.del_addr(a, net("fd00:1::2/64")).unwrap();
    assert!(matches!(
        h.del_addr(a, net("10.1.0.2/24")),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        h.del_addr(a, net("fd00:1::2/64")),
        Err(Error::NotFound(_))
    ));
    assert!(h.addrs(Some(a)).unwrap().iter().all(
        |x| !matches!(x.net.ip(), IpAddr::V4(_)) && !x.net.ip().to_string().starts_with("fd00")
    ));
}

#[test]
fn routes_add_list_delete() {
    let ns = netns();
    let h = handle(&ns);
    let a = pair(&ns, &h);
    h.add_addr(a, net("10.2.0.1/24"), false).unwrap();
    h.add_addr(a, net("fd00:2::1/64"), true).unwrap();

    let gw4 = RouteSpec {
        gw: Some("10.2.0.254".parse().unwrap()),
        metric: Some(100),
        mtu: Some(1400),
        advmss: Some(1360),
        ..RouteSpec::new(net("192.0.2.7/24")) // host bits are dropped
    };
    let dev6 = RouteSpec {
        oif: Some(a),
        metric: Some(50),
        ..RouteSpec::new(net("fd00:99::/64"))
    };
    let default6 = RouteSpec {
        gw: Some("fd00:2::fe".parse().unwrap()),
        ..RouteSpec::new(net("::/0"))
    };
    let table = RouteSpec {
        oif: Some(a),
        table: Some(1000),
        ..RouteSpec::new(net("198.51.100.0/24"))
    };
    for r in [&gw4, &dev6, &default6, &table] {
        h.add_route(r).unwrap();
    }
    assert!(matches!(h.add_route(&gw4), Err(Error::Exists(_))));

    let v4 = h.routes(false).unwrap();
    let r = v4
        .iter()
        .find(|r| r.dst == net("192.0.2.0/24"))
        .unwrap_or_else(|| panic!("{v4:#?}"));
    assert_eq!(r.gw, gw4.gw);
    assert_eq!(
        (r.oif, r.metric, r.mtu, r.advmss),
        (Some(a), Some(100), Some(1400), Some(1360))
    );
    assert_eq!((r.table, r.scope, r.protocol), (Some(254), Some(0), 4));
    let t = v4.iter().find(|r| r.dst == net("198.51.100.0/24")).unwrap();
    assert_eq!(
        (t.table, t.scope),
        (Some(1000), Some(253)),
        "device route: link scope"
    );
    // The kernel's connected route is listed too, the local table is not.
    assert!(
        v4.iter()
            .any(|r| r.dst == net("10.2.0.0/24") && r.protocol == 2)
    );
    assert!(v4.iter().all(|r| r.table != Some(255)));

    let v6 = h.routes(true).unwrap();
    let r = v6.iter().find(|r| r.dst == net("fd00:99::/64")).unwrap();
    assert_eq!((r.oif, r.metric), (Some(a), Some(50)));
    let d = v6.iter().find(|r| r.dst.prefix() == 0).expect("v6 default");
    assert_eq!(d.gw, default6.gw);
    assert!(v6.iter().all(|r| r.dst.is_ipv6()));

    let text = ip(&ns, &["route", "show"]);
    assert!(
        text.contains(
            "192.0.2.0/24 via 10.2.0.254 dev a proto static metric 100 mtu 1400 advmss 1360"
        ),
        "{text}"
    );
    let text = ip(&ns, &["-6", "route", "show"]);
    assert!(text.contains("default via fd00:2::fe dev a"), "{text}");

    for r in [&gw4, &dev6, &default6, &table] {
        h.del_route(r).unwrap();
        assert!(matches!(h.del_route(r), Err(Error::NotFound(_))), "{r}");
    }
    assert!(
        !h.routes(false)
            .unwrap()
            .iter()
            .any(|r| r.dst == net("192.0.2.0/24"))
    );
    assert!(!h.routes(true).unwrap().iter().any(|r| r.dst.prefix() == 0));

    // A RouteInfo turns back into a spec that deletes it.
    let connected = h
        .routes(false)
        .unwrap()
        .into_iter()
        .find(|r| r.dst == net("10.2.0.0/24"))
        .unwrap();
    h.del_route(&connected.spec()).unwrap();
    assert!(
        !h.routes(false)
            .unwrap()
            .iter()
            .any(|r| r.dst == net("10.2.0.0/24"))
    );

    let mixed = RouteSpec {
        gw: Some("fd00::1".parse().unwrap()),
        ..RouteSpec::new(net("10.9.0.0/16"))
    };
    assert!(matches!(h.add_route(&mixed), Err(Error::Invalid(_))));
}

#[test]
fn sysctl_inside_a_namespace() {
    let ns = netns();
    let before_here = sysctl_get(None, "net.ipv4.ip_forward").unwrap();
    assert_eq!(
        sysctl_get(Some(ns.as_fd()), "net.ipv4.ip_forward").unwrap(),
        "0"
    );
    sysctl_set(Some(ns.as_fd()), "net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(
        sysctl_get(Some(ns.as_fd()), "net/ipv4/ip_forward").unwrap(),
        "1"
    );
    let out = ns
        .command("cat")
        .arg("/proc/sys/net/ipv4/ip_forward")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    // The test's own namespace is untouched.
    assert_eq!(
        sysctl_get(None, "net.ipv4.ip_forward").unwrap(),
        before_here
    );

    // Equal values are not written: a read-only knob "set" to its own value succeeds, any other
    // value is refused by the kernel.
    let ro = "net/ipv4/tcp_available_congestion_control";
    let cur = sysctl_get(Some(ns.as_fd()), ro).unwrap();
    sysctl_set(Some(ns.as_fd()), ro, &cur).unwrap();
    assert!(matches!(
        sysctl_set(Some(ns.as_fd()), ro, "reno"),
        Err(Error::PermissionDenied(m)) if m.contains(ro)
    ));

    assert!(matches!(
        sysctl_get(Some(ns.as_fd()), "net.ipv4.conf.nope0.forwarding"),
        Err(Error::NotFound(_))
    ));
    for bad in [
        "net/../../etc/passwd",
        "/proc/sys/net/ipv4/ip_forward",
        "kernel.hostname",
    ] {
        assert!(
            matches!(
                sysctl_set(Some(ns.as_fd()), bad, "1"),
                Err(Error::Invalid(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn open_netns_accepts_any_nsfs_path_and_nothing_else() {
    let ns = netns();
    // /proc/PID/fd/N, as the fixture hands out for CNI_NETNS.
    let fd = open_netns(&ns.path()).unwrap();
    let h = NsHandle::for_netns(fd.as_fd()).unwrap();
    h.create_bridge("seen0", None, false).unwrap();
    assert!(
        handle(&ns).link_by_name("seen0").unwrap().is_some(),
        "same namespace"
    );
    // /proc/PID/ns/net form.
    open_netns(std::path::Path::new("/proc/self/ns/net")).unwrap();

    let file = tempfile::NamedTempFile::new().unwrap();
    assert!(matches!(open_netns(file.path()), Err(Error::NotANamespace(p)) if p == file.path()));
    assert!(matches!(
        open_netns(std::path::Path::new("/proc/self/ns/mnt")),
        Err(Error::NotANamespace(_))
    ));
    assert!(matches!(
        open_netns(std::path::Path::new("/run/netns/tether-test-does-not-exist")),
        Err(Error::NotFound(m)) if m.contains("tether-test-does-not-exist")
    ));
}

#[test]
fn current_handle_follows_the_creating_thread() {
    let ns = netns();
    let names = ns.run(|| {
        let h = NsHandle::current().unwrap();
        h.create_bridge("inside0", None, false).unwrap();
        h
    });
    // The handle keeps acting in `ns` after the thread that made it is gone.
    let links: Vec<String> = names.links().unwrap().into_iter().map(|l| l.name).collect();
    assert!(links.contains(&"inside0".to_string()), "{links:?}");
    assert_eq!(links.len(), 2, "{links:?}");
}

#[test]
fn dumps_stay_complete_while_the_table_changes() {
    // Enough links that a dump spans several netlink reads, so concurrent changes can
    // interrupt it (NLM_F_DUMP_INTR); every dump must still list every stable link exactly once.
    let ns = netns();
    let h = handle(&ns);
    for i in 0..40 {
        h.create_veth(
            &format!("s{i}a"),
            None,
            None,
            &format!("s{i}b"),
            ns.as_fd(),
            None,
            None,
        )
        .unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let churn = handle(&ns);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let br = churn.create_bridge("churn0", None, false).unwrap();
                churn.del_link(br.index).unwrap();
            }
        });
        for _ in 0..100 {
            let mut names: Vec<String> = h
                .links()
                .unwrap()
                .into_iter()
                .map(|l| l.name)
                .filter(|n| n != "churn0")
                .collect();
            names.sort();
            let n = names.len();
            names.dedup();
            assert_eq!((n, names.len()), (81, 81), "lo + 80 veth ends, once each");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // The churn did interrupt dumps (about one in four on the CI kernel), so the complete
    // results above went through the restart path.
    assert!(h.dump_restarts() > 0, "no dump was ever interrupted");
}

#[test]
fn in_netns_runs_on_a_thread_inside_and_keeps_the_caller_out() {
    let ns = netns();
    let inode = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let mine = inode("/proc/thread-self/ns/net").unwrap();
    let theirs = ns.run(|| inode("/proc/thread-self/ns/net").unwrap());
    let seen = tether_netlink::in_netns(ns.as_fd(), || inode("/proc/thread-self/ns/net"))
        .unwrap()
        .unwrap();
    assert_eq!(seen, theirs);
    assert_ne!(seen, mine);
    assert_eq!(inode("/proc/thread-self/ns/net").unwrap(), mine);

    // A handle made inside keeps acting there.
    let h = tether_netlink::in_netns(ns.as_fd(), NsHandle::current)
        .unwrap()
        .unwrap();
    h.create_bridge("made0", None, false).unwrap();
    ip(&ns, &["link", "show", "made0"]);

    // Not a namespace: the error, and `f` never runs.
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let mut ran = false;
    let e = tether_netlink::in_netns(file.as_fd(), || ran = true).unwrap_err();
    assert!(!ran);
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");

    // A panic inside reaches the caller with its message.
    let p = std::panic::catch_unwind(|| {
        tether_netlink::in_netns(ns.as_fd(), || panic!("boom inside")).ok()
    })
    .unwrap_err();
    assert_eq!(p.downcast_ref::<&str>(), Some(&"boom inside"));
}

#[test]
fn raw_rtnetlink_dumps_and_hand_built_requests() {
    use futures::TryStreamExt;
    use rtnetlink::LinkBridge;
    use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use tether_netlink::{Rtnl, rtnl_ack, rtnl_errno};

    let ns = netns();
    let r = Rtnl::for_netns(ns.as_fd()).unwrap();
    let create = |name: &str| {
        let msg = RouteNetlinkMessage::NewLink(LinkBridge::new(name).build());
        r.block_on(async |h| rtnl_ack(&h, msg, NLM_F_CREATE | NLM_F_EXCL).await)
    };
    create("raw0").unwrap();
    ip(&ns, &["link", "show", "raw0"]);
    let e = create("raw0").unwrap_err();
    assert_eq!(rtnl_errno(&e), Some(libc::EEXIST), "{e}");

    // rtnetlink's own dump builders work over it (they reject a forwarded NLMSG_DONE).
    let names = r.block_on(async |h| {
        h.link()
            .get()
            .execute()
            .map_ok(|m| m.header.index)
            .try_collect::<Vec<u32>>()
            .await
    });
    assert_eq!(names.unwrap().len(), 2, "lo and raw0");
    let qdiscs = r.block_on(async |h| h.qdisc().get().execute().try_collect::<Vec<_>>().await);
    assert!(qdiscs.is_ok(), "{qdiscs:?}");

    // `current` is the calling thread's namespace: here, ours, where raw0 does not exist.
    let ours = Rtnl::current().unwrap();
    let found =
        ours.block_on(async |h| h.link().get().match_name("raw0").execute().try_next().await);
    assert_eq!(
        found.as_ref().err().and_then(rtnl_errno),
        Some(libc::ENODEV),
        "{found:?}"
    );
}

#[test]
fn veth_with_an_alias_and_alias_changes() {
    let host = netns();
    let ctr = netns();
    let h = handle(&host);
    let br = h.create_bridge("br0", None, false).unwrap();
    let alias = "tether:net:0123abcd:eth0";
    let idx = h
        .create_veth_with(&VethSpec {
            master: Some(br.index),
            alias: Some(alias),
            mtu: Some(1400),
            peer_mtu: Some(1300),
            ..VethSpec::new("veth0", "eth0", ctr.as_fd())
        })
        .unwrap();
    let hv = h.link_by_index(idx).unwrap().expect("host end");
    assert_eq!(hv.name, "veth0");
    assert_eq!(hv.alias.as_deref(), Some(alias));
    assert_eq!((hv.master, hv.mtu, hv.up), (Some(br.index), 1400, true));
    // The same through a dump and through iproute2; the peer has no alias.
    let listed = h.links().unwrap();
    let l = listed.iter().find(|l| l.index == idx).unwrap();
    assert_eq!(l.alias.as_deref(), Some(alias));
    assert!(
        listed
            .iter()
            .filter(|l| l.index != idx)
            .all(|l| l.alias.is_none())
    );
    assert_eq!(
        ip_json(&host, &["link", "show", "veth0"])[0]["ifalias"],
        alias
    );
    let cv = handle(&ctr).link_by_name("eth0").unwrap().expect("peer");
    assert_eq!((cv.alias, cv.mtu, cv.up), (None, 1300, false));

    h.set_alias(idx, "changed").unwrap();
    assert_eq!(
        ip_json(&host, &["link", "show", "veth0"])[0]["ifalias"],
        "changed"
    );
    assert_eq!(
        h.link_by_name("veth0").unwrap().unwrap().alias.as_deref(),
        Some("changed")
    );
    // "" removes it.
    h.set_alias(idx, "").unwrap();
    assert_eq!(h.link_by_index(idx).unwrap().unwrap().alias, None);
    assert!(ip_json(&host, &["link", "show", "veth0"])[0]["ifalias"].is_null());
    assert!(matches!(h.set_alias(4242, "x"), Err(Error::NotFound(_))));

    // An alias the kernel refuses (IFALIASZ is 256 with the NUL): the error, and no pair is
    // left behind on either side.
    let long = "x".repeat(256);
    let e = h
        .create_veth_with(&VethSpec {
            alias: Some(&long),
            ..VethSpec::new("veth1", "eth1", ctr.as_fd())
        })
        .unwrap_err();
    assert!(e.to_string().contains("alias"), "{e}");
    assert!(h.link_by_name("veth1").unwrap().is_none());
    assert!(handle(&ctr).link_by_name("eth1").unwrap().is_none());
    // 255 bytes fit.
    let max = "y".repeat(255);
    let idx = h
        .create_veth_with(&VethSpec {
            alias: Some(&max),
            ..VethSpec::new("veth1", "eth1", ctr.as_fd())
        })
        .unwrap();
    assert_eq!(h.link_by_index(idx).unwrap().unwrap().alias, Some(max));
}

#[test]
fn veth_peer_may_have_the_same_index_in_another_namespace() {
    // Two fresh namespaces number their links alike (lo is 1): the pair gets index 2 in both.
    let (a, b) = (netns(), netns());
    let (ha, hb) = (handle(&a), handle(&b));
    let ia = ha
        .create_veth("va", None, None, "vb", b.as_fd(), None, None)
        .unwrap();
    let lb = hb.link_by_name("vb").unwrap().expect("peer");
    assert_eq!(ia, lb.index, "the test needs equal indexes on both sides");
    let la = ha.link_by_index(ia).unwrap().unwrap();
    assert!(la.link_netnsid.is_some() && lb.link_netnsid.is_some());
    assert_eq!(la.peer_index, Some(lb.index), "{la:?}");
    assert_eq!(lb.peer_index, Some(la.index), "{lb:?}");
    // iproute2 reads the same IFLA_LINK.
    assert_eq!(ip_json(&a, &["link", "show", "va"])[0]["link_index"], ia);

    // A veth with its peer in the same namespace never has its own index as peer, and a link
    // without a peer has none.
    let (ha2, _) = (pair(&a, &ha), ());
    let peer = ha.link_by_name("b").unwrap().unwrap();
    let own = ha.link_by_index(ha2).unwrap().unwrap();
    assert_eq!((own.peer_index, own.link_netnsid), (Some(peer.index), None));
    assert_eq!(ha.link_by_name("lo").unwrap().unwrap().peer_index, None);
}

#[test]
fn route_protocol_is_set_listed_and_matched_on_delete() {
    let ns = netns();
    let h = handle(&ns);
    let a = pair(&ns, &h);
    h.add_addr(a, net("10.3.0.1/24"), false).unwrap();
    h.add_addr(a, net("fd00:3::1/64"), true).unwrap();
    let boot4 = RouteSpec {
        gw: Some("10.3.0.254".parse().unwrap()),
        protocol: Some(RTPROT_BOOT),
        ..RouteSpec::new(net("192.0.2.0/24"))
    };
    let boot6 = RouteSpec {
        oif: Some(a),
        protocol: Some(RTPROT_BOOT),
        ..RouteSpec::new(net("fd00:77::/64"))
    };
    let default4 = RouteSpec {
        gw: Some("10.3.0.254".parse().unwrap()),
        ..RouteSpec::new(net("0.0.0.0/0"))
    };
    for r in [&boot4, &boot6, &default4] {
        h.add_route(r).unwrap();
    }
    let proto = |v6: bool, dst: &str| {
        h.routes(v6)
            .unwrap()
            .into_iter()
            .find(|r| r.dst == net(dst))
            .map(|r| r.protocol)
    };
    assert_eq!(proto(false, "192.0.2.0/24"), Some(RTPROT_BOOT));
    assert_eq!(proto(true, "fd00:77::/64"), Some(RTPROT_BOOT));
    assert_eq!(
        proto(false, "0.0.0.0/0"),
        Some(RTPROT_STATIC),
        "the default"
    );
    // iproute2 agrees (it leaves `proto boot` out unless asked for details).
    let by_iproute = |args: &[&str], dst: &str| {
        let j = ip_json(&ns, args);
        let r = j
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dst"] == dst)
            .cloned();
        r.unwrap_or_else(|| panic!("{dst} missing: {j}"))["protocol"].clone()
    };
    assert_eq!(by_iproute(&["-d", "route", "show"], "192.0.2.0/24"), "boot");
    assert_eq!(by_iproute(&["-d", "route", "show"], "default"), "static");
    assert_eq!(
        by_iproute(&["-d", "-6", "route", "show"], "fd00:77::/64"),
        "boot"
    );

    // Deleting with another protocol matches nothing, in both families; with none, any.
    for (r, v6, dst) in [
        (&boot4, false, "192.0.2.0/24"),
        (&boot6, true, "fd00:77::/64"),
    ] {
        let wrong = RouteSpec {
            protocol: Some(RTPROT_STATIC),
            ..r.clone()
        };
        assert!(
            matches!(h.del_route(&wrong), Err(Error::NotFound(_))),
            "{wrong}"
        );
        assert!(wrong.to_string().ends_with(" proto 4"), "{wrong}");
        assert_eq!(proto(v6, dst), Some(RTPROT_BOOT));
        h.del_route(r).unwrap();
        assert_eq!(proto(v6, dst), None);
    }
    h.del_route(&RouteSpec {
        protocol: None,
        ..default4.clone()
    })
    .unwrap();
    assert_eq!(proto(false, "0.0.0.0/0"), None);
}

/// IPv6 addresses of `idx`, polled for up to 2 s until `want(list)` holds; returns the last list.
fn v6_addrs_until(h: &NsHandle, idx: u32, want: impl Fn(&[IpNetwork]) -> bool) -> Vec<IpNetwork> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let v6: Vec<IpNetwork> = h
            .addrs(Some(idx))
            .unwrap()
            .into_iter()
            .map(|a| a.net)
            .filter(|n| n.is_ipv6())
            .collect();
        if want(&v6) || std::time::Instant::now() > deadline {
            return v6;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn veth_host_end_without_ipv6_link_local() {
    let host = netns();
    let (c1, c2) = (netns(), netns());
    let h = handle(&host);
    let br = h.create_bridge("br0", None, false).unwrap();
    let quiet = h
        .create_veth_with(&VethSpec {
            master: Some(br.index),
            alias: Some("quiet port"),
            ipv6_link_local: false,
            ..VethSpec::new("vquiet", "eth0", c1.as_fd())
        })
        .unwrap();
    let usual = h
        .create_veth_with(&VethSpec {
            master: Some(br.index),
            ..VethSpec::new("vusual", "eth0", c2.as_fd())
        })
        .unwrap();
    for c in [&c1, &c2] {
        let ch = handle(c);
        let eth0 = ch.link_by_name("eth0").unwrap().unwrap();
        ch.set_up(eth0.index).unwrap();
    }
    // With carrier on both, the kernel gives the usual host end a link-local address...
    let usual_v6 = v6_addrs_until(&h, usual, |v| !v.is_empty());
    assert!(
        usual_v6.iter().any(|n| n.to_string().starts_with("fe80:")),
        "{usual_v6:?}"
    );
    // ...and the quiet one none, while its alias (sent in the same request) is set.
    assert_eq!(v6_addrs_until(&h, quiet, |_| false), []);
    let d = ip_json(&host, &["-d", "link", "show", "vquiet"]);
    assert_eq!(d[0]["inet6_addr_gen_mode"], "none", "{d}");
    assert_eq!(d[0]["ifalias"], "quiet port", "{d}");
    let d = ip_json(&host, &["-d", "link", "show", "vusual"]);
    assert_eq!(d[0]["inet6_addr_gen_mode"], "eui64", "{d}");
    // The container ends are untouched: they get their link-local as usual.
    let ch = handle(&c1);
    let eth0 = ch.link_by_name("eth0").unwrap().unwrap().index;
    assert!(!v6_addrs_until(&ch, eth0, |v| !v.is_empty()).is_empty());
}

#[test]
fn filtered_address_dump_matches_the_full_one() {
    let ns = netns();
    let h = handle(&ns);
    let a = pair(&ns, &h);
    let b = h.link_by_name("b").unwrap().unwrap().index;
    h.add_addr(a, net("10.2.0.2/24"), false).unwrap();
    h.add_addr(b, net("10.2.0.3/24"), false).unwrap();
    h.add_addr(b, net("fd00:2::3/64"), true).unwrap();
    // The kernel adds link-local addresses (and ends their DAD) on its own: wait for them, and
    // compare without the flags that DAD changes.
    for idx in [a, b] {
        v6_addrs_until(&h, idx, |v| {
            v.iter().any(|n| n.to_string().starts_with("fe80:"))
        });
    }
    let key = |v: Vec<tether_netlink::Addr>| -> Vec<(u32, IpNetwork, u8)> {
        v.into_iter().map(|x| (x.index, x.net, x.scope)).collect()
    };
    let all = key(h.addrs(None).unwrap());
    for idx in [a, b] {
        let want: Vec<_> = all.iter().filter(|x| x.0 == idx).cloned().collect();
        assert!(want.len() >= 2, "{want:?}");
        assert_eq!(key(h.addrs(Some(idx)).unwrap()), want, "link #{idx}");
    }
    // A link that does not exist has no addresses (not an error), and the handle still works
    // for requests that strict checking would refuse (the mode was switched off again).
    assert_eq!(h.addrs(Some(999_999)).unwrap(), []);
    assert_eq!(h.addrs(None).unwrap().len(), all.len());
    assert!(h.link_by_name("a").unwrap().is_some());
}
