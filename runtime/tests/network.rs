//! `--net` modes end to end, through the CNI plugins, inside a throwaway host namespace.

mod common;
use common::*;
use netns_fixtures::EchoServer;
use std::net::SocketAddr;
use std::time::Duration;

#[test]
fn none_sees_only_lo() {
    require_plugins(&["none"]);
    let env = Env::new();
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--",
        "sh",
        "-c",
        "ip -o link; ip -o addr",
    ]);
    let text = out.ok();
    let links: Vec<&str> = text.lines().filter(|l| l.contains("link/")).collect();
    assert_eq!(links.len(), 1, "{text}");
    assert!(
        links[0].contains("lo:") && links[0].contains("UP"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1/8"));
    env.assert_clean();
}

#[test]
fn host_sees_the_fake_hosts_links() {
    require_plugins(&["host"]);
    let env = Env::new();
    let veth = env
        .host
        .command("ip")
        .args([
            "link",
            "add",
            "fakehost0",
            "type",
            "veth",
            "peer",
            "name",
            "fakehost1",
        ])
        .status()
        .unwrap();
    assert!(veth.success());
    let out = env.tether(&["run", "--rm", "--net=host", "--", "ip", "-o", "link"]);
    let text = out.ok();
    assert!(
        text.contains("fakehost0") && text.contains("fakehost1"),
        "{text}"
    );
    // And nothing of the real host: its links are not in our fake host.
    assert_eq!(text.lines().count(), 3, "{text}");
    env.assert_clean();
}

#[test]
fn bridge_gives_an_address_reaches_gateway_peer_and_outside_through_nat() {
    let env = Env::new();
    let outside = env.host.add_outside();
    let echo = EchoServer::tcp(
        &outside.ns,
        SocketAddr::new(outside.outside_v4.into(), 7777),
    );
    env.run_detached("b1", &[], &["sleep", "60"]);
    env.run_detached("b2", &["--net=bridge"], &["sleep", "60"]);
    let addr = |n: &str| {
        let st = env.inspect(n);
        st["network"]["result"]["ips"][0]["address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a1, a2) = (addr("b1"), addr("b2"));
    let ip1: ipnetwork::IpNetwork = a1.parse().unwrap();
    assert!(
        "10.88.0.0/16"
            .parse::<ipnetwork::IpNetwork>()
            .unwrap()
            .contains(ip1.ip()),
        "{a1}"
    );
    assert_ne!(a1, a2);
    let ip2 = a2.split('/').next().unwrap();
    // The container's view: its address on eth0, a default route via the gateway.
    let out = env.tether(&[
        "exec",
        "b1",
        "sh",
        "-c",
        "ip -o -4 addr show eth0; ip route",
    ]);
    assert!(out.ok().contains(&a1), "{}", out.stdout);
    assert!(
        out.stdout.contains("default via 10.88.0.1"),
        "{}",
        out.stdout
    );
    env.tether(&["exec", "b1", "ping", "-c1", "-W2", "10.88.0.1"])
        .ok();
    env.tether(&["exec", "b1", "ping", "-c1", "-W2", ip2]).ok();
    // Out through the host's masquerade: the outside sees the host's address.
    let send = format!("echo hello | busybox nc -w 3 {} 7777", outside.outside_v4);
    let out = env.tether(&["exec", "b1", "sh", "-c", &send]);
    assert_eq!(out.ok().trim(), "hello");
    let peers = echo.peers();
    assert!(!peers.is_empty());
    assert!(
        peers
            .iter()
            .all(|p| p.ip() == std::net::IpAddr::from(outside.host_v4)),
        "{peers:?}"
    );
    assert!(!env.nat_rules().is_empty());
    env.tether(&["rm", "-f", "b1", "b2"]).ok();
    env.assert_clean();
}

#[test]
fn container_mode_shares_the_namespace_and_its_loopback() {
    require_plugins(&["container"]);
    let env = Env::new();
    let www = env.host.dir().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "from A\n").unwrap();
    env.run_detached(
        "A",
        &[],
        &[
            "busybox",
            "httpd",
            "-f",
            "-p",
            "127.0.0.1:8080",
            "-h",
            www.to_str().unwrap(),
        ],
    );
    let a_addr = env.inspect("A")["network"]["result"]["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(wait_for(Duration::from_secs(5), || {
        env.tether(&[
            "exec",
            "A",
            "busybox",
            "wget",
            "-qO-",
            "http://127.0.0.1:8080/",
        ])
        .code
            == Some(0)
    }));
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=container:A",
        "--",
        "sh",
        "-c",
        "ip -o -4 addr show eth0; busybox wget -qO- http://127.0.0.1:8080/",
    ]);
    let text = out.ok();
    assert!(text.contains(&a_addr), "same address as A: {text}");
    assert!(text.contains("from A"), "{text}");
    let b = env.tether(&[
        "run",
        "-d",
        "--name",
        "B",
        "--net=container:A",
        "--",
        "sleep",
        "30",
    ]);
    b.ok();
    assert_eq!(
        env.inspect("B")["namespaces"]["net"],
        env.inspect("A")["namespaces"]["net"]
    );
    assert_eq!(
        env.inspect("B")["network"]["joined"],
        env.inspect("A")["id"]
    );
    // B's removal (the container plugin's DEL) leaves A's network alone.
    env.tether(&["rm", "-f", "B"]).ok();
    env.tether(&[
        "exec",
        "A",
        "busybox",
        "wget",
        "-qO-",
        "http://127.0.0.1:8080/",
    ])
    .ok();
    env.tether(&["rm", "-f", "A"]).ok();
    env.assert_clean();
}

#[test]
fn created_network_ls_inspect_rm() {
    let env = Env::new();
    env.tether(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.89.7.0/24",
        "--bridge",
        "blue0",
    ])
    .ok();
    let conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.config_dir.join("blue.conflist")).unwrap())
            .unwrap();
    assert_eq!(conf["cniVersion"], "1.1.0", "our plugins speak 1.1.0");
    let ls = env.tether(&["network", "ls"]);
    assert!(
        ls.ok().contains("blue")
            && ls.stdout.contains("10.89.7.0/24")
            && ls.stdout.contains("built-in")
    );
    env.run_detached("c", &["--net=blue"], &["sleep", "30"]);
    let st = env.inspect("c");
    let addr = st["network"]["result"]["ips"][0]["address"]
        .as_str()
        .unwrap();
    assert!(addr.starts_with("10.89.7."), "{addr}");
    assert!(env.host_links().contains(&"blue0".to_string()));
    let insp = env.tether(&["network", "inspect", "blue"]);
    assert!(insp.ok().contains(addr));
    env.tether(&["network", "rm", "blue"]).fails_with("in use");
    env.tether(&["rm", "-f", "c"]).ok();
    env.tether(&["network", "rm", "blue"]).ok();
    assert!(!env.config_dir.join("blue.conflist").exists());
    env.tether(&["network", "create", "x", "--subnet", "10.88.1.0/24"])
        .fails_with("overlaps");
    env.tether(&["network", "create", "bridge", "--subnet", "10.90.0.0/24"])
        .fails_with("reserved");
    env.tether(&["network", "create", "y", "--subnet", "nonsense"])
        .fails_with("CIDR");
    env.tether(&[
        "network",
        "create",
        "old",
        "--subnet",
        "10.91.0.0/24",
        "--cni-version",
        "1.0.0",
    ])
    .ok();
    let conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.config_dir.join("old.conflist")).unwrap())
            .unwrap();
    assert_eq!(conf["cniVersion"], "1.0.0");
    env.tether(&[
        "network",
        "create",
        "z",
        "--subnet",
        "10.92.0.0/24",
        "--cni-version",
        "2.0",
    ])
    .fails_with("--cni-version");
    env.assert_clean();
}

#[test]
fn cni_subcommand_drives_a_conflist_by_hand() {
    let env = Env::new();
    let ns = env.host.container();
    let netns = ns.path().display().to_string();
    // The netns is held by the test process: give tether a path it can open.
    let out = env.tether(&["cni", "add", "bridge", &netns, "--container-id", "manual1"]);
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    let addr = v["ips"][0]["address"].as_str().unwrap().to_string();
    let inside = ns
        .command("ip")
        .args(["-o", "-4", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(text(&inside).contains(&addr));
    env.tether(&[
        "cni",
        "check",
        "bridge",
        &netns,
        "--container-id",
        "manual1",
    ])
    .ok();
    env.tether(&["cni", "status", "bridge"]).ok();
    env.tether(&["cni", "del", "bridge", &netns, "--container-id", "manual1"])
        .ok();
    let inside = ns.command("ip").args(["-o", "link"]).output().unwrap();
    assert!(!text(&inside).contains("eth0"));
    // GC with nothing valid removes a forgotten attachment.
    env.tether(&["cni", "add", "bridge", &netns, "--container-id", "manual2"])
        .ok();
    assert_eq!(env.leases().len(), 1);
    env.tether(&["cni", "gc", "bridge"]).ok();
    assert_eq!(env.leases(), Vec::<String>::new());
    assert_eq!(env.cni_cache(), Vec::<String>::new());
}

#[test]
fn published_port_reaches_the_container() {
    let env = Env::new();
    let outside = env.host.add_outside();
    let www = env.host.dir().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "published\n").unwrap();
    env.run_detached(
        "web",
        &["-p", "8080:80"],
        &[
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            www.to_str().unwrap(),
        ],
    );
    assert_eq!(env.inspect("web")["network"]["ports"][0]["hostPort"], 8080);
    let url = format!("http://{}:8080/", outside.host_v4);
    let got = wait_for(Duration::from_secs(5), || {
        outside
            .ns
            // (busybox wget's own -T crashes: bound it from outside)
            .command("timeout")
            .args(["5", "busybox", "wget", "-qO-", &url])
            .output()
            .is_ok_and(|o| text(&o) == "published\n")
    });
    assert!(got, "{url} did not reach the container");
    env.tether(&["rm", "-f", "web"]).ok();
    env.assert_clean();
}

fn host_veths(env: &Env) -> Vec<String> {
    env.host_links()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect()
}

#[test]
fn prune_gcs_what_no_cache_entry_remembers() {
    require_plugins(&["bridge", "host-local"]);
    let env = Env::new();
    env.run_detached("keep", &[], &["sleep", "60"]);
    let st = env.inspect("keep");
    assert_eq!(st["network"]["conflist"]["cniVersion"], "1.1.0");
    let keep_id = st["id"].as_str().unwrap().to_string();
    // An attachment whose runtime forgot it: added by hand, then its cache entry lost.
    let ns = env.host.container();
    let netns = ns.path().display().to_string();
    env.tether(&["cni", "add", "bridge", &netns, "--container-id", "ghost"])
        .ok();
    assert_eq!(env.leases().len(), 2);
    assert_eq!(host_veths(&env).len(), 2);
    // Masquerading is one shared chain for the network: nothing in it is the ghost's to collect.
    let nat = env.nat_rules();
    assert!(nat.iter().any(|r| r.contains("-j MASQUERADE")), "{nat:#?}");
    std::fs::remove_file(env.root.join("cni/results/bridge-ghost-eth0")).unwrap();
    assert_eq!(env.cni_cache().len(), 1);

    env.tether(&["network", "prune"]).ok();
    assert_eq!(env.leases().len(), 1, "ghost's lease collected");
    assert_eq!(host_veths(&env).len(), 1, "ghost's veth collected");
    assert_eq!(env.nat_rules(), nat, "prune left the shared chain alone");
    let inside = ns.command("ip").args(["-o", "link"]).output().unwrap();
    assert!(!text(&inside).contains("eth0"), "{}", text(&inside));
    // The running container's attachment is valid and untouched.
    assert_eq!(env.cni_cache(), [format!("bridge-{keep_id}-eth0")]);
    env.tether(&["exec", "keep", "ping", "-c1", "-W2", "10.88.0.1"])
        .ok();
    env.tether(&["rm", "-f", "keep"]).ok();
    env.assert_clean();
}

#[test]
fn the_builtin_network_speaks_1_0_0_to_plugins_that_stop_there() {
    // Debian's reference plugins support CNI up to 1.0.0: the built-in network lowers its
    // version for them instead of failing.
    let reference = std::path::Path::new("/usr/lib/cni");
    for p in ["bridge", "host-local", "portmap"] {
        assert!(
            reference.join(p).is_file(),
            "Debian's containernetworking-plugins must be installed in /usr/lib/cni"
        );
    }
    let env = Env::new();
    let mut c = env.cmd();
    c.env("CNI_PATH", reference).args([
        "run", "-d", "--name", "r", "-p", "8090:80", "--", "sleep", "60",
    ]);
    run_with_timeout(c, Duration::from_secs(60)).ok();
    let st = env.inspect("r");
    assert_eq!(st["network"]["conflist"]["cniVersion"], "1.0.0", "{st:#}");
    let addr = st["network"]["result"]["ips"][0]["address"]
        .as_str()
        .unwrap();
    assert!(addr.starts_with("10.88."), "{addr}");
    let mut c = env.cmd();
    c.env("CNI_PATH", reference).args(["network", "prune"]);
    run_with_timeout(c, Duration::from_secs(60)).ok();
    assert_eq!(
        env.leases().len(),
        1,
        "prune keeps a running container's lease"
    );
    let mut c = env.cmd();
    c.env("CNI_PATH", reference).args(["rm", "-f", "r"]);
    run_with_timeout(c, Duration::from_secs(60)).ok();
    env.assert_clean();
}

#[test]
fn network_rm_is_refused_while_in_use_then_gcs_the_network_and_removes_its_conflist() {
    require_plugins(&["bridge", "host-local"]);
    let env = Env::new();
    env.tether(&[
        "network",
        "create",
        "green",
        "--subnet",
        "10.93.4.0/24",
        "--bridge",
        "green0",
    ])
    .ok();
    env.run_detached("user1", &["--net=green"], &["sleep", "60"]);
    let r = env.tether(&["network", "rm", "green"]);
    r.fails_with("in use");
    r.fails_with("user1");
    assert!(
        env.config_dir.join("green.conflist").exists(),
        "kept while in use"
    );
    // An attachment nobody remembers: added by hand, its cache entry lost. Only the network's GC
    // can find it.
    let ns = env.host.container();
    let netns = ns.path().display().to_string();
    env.tether(&["cni", "add", "green", &netns, "--container-id", "ghost"])
        .ok();
    std::fs::remove_file(env.root.join("cni/results/green-ghost-eth0")).unwrap();
    env.tether(&["rm", "-f", "user1"]).ok();
    assert_eq!(env.leases().len(), 1, "the ghost's lease");
    assert_eq!(host_veths(&env).len(), 1, "the ghost's veth");
    env.tether(&["network", "rm", "green"]).ok();
    assert!(!env.config_dir.join("green.conflist").exists());
    assert_eq!(env.leases(), Vec::<String>::new(), "GC collected the lease");
    assert_eq!(
        host_veths(&env),
        Vec::<String>::new(),
        "GC collected the veth"
    );
    let inside = ns.command("ip").args(["-o", "link"]).output().unwrap();
    assert!(!text(&inside).contains("eth0"), "{}", text(&inside));
    env.tether(&["network", "inspect", "green"])
        .fails_with("unknown network");
    env.assert_clean();
}

#[test]
fn network_rm_keeps_the_conflist_when_gc_fails_and_can_be_retried() {
    let env = Env::new();
    let bin = env.host.dir().join("gcbin");
    std::fs::create_dir(&bin).unwrap();
    let plugin = |ok: bool| {
        use std::os::unix::fs::PermissionsExt;
        let body = if ok {
            "#!/bin/sh\nexit 0\n"
        } else {
            "#!/bin/sh\necho '{\"cniVersion\":\"1.1.0\",\"code\":999,\"msg\":\"gc refused by the fake plugin\"}'\nexit 1\n"
        };
        let tmp = bin.join(".gcfail.tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, bin.join("gcfail")).unwrap();
    };
    plugin(false);
    std::fs::create_dir_all(&env.config_dir).unwrap();
    let conf = env.config_dir.join("flaky.conflist");
    std::fs::write(
        &conf,
        r#"{"cniVersion":"1.1.0","name":"flaky","plugins":[{"type":"gcfail"}]}"#,
    )
    .unwrap();
    let rm = || {
        let mut c = env.cmd();
        c.env("CNI_PATH", &bin).args(["network", "rm", "flaky"]);
        run_with_timeout(c, Duration::from_secs(30))
    };
    let r = rm();
    r.fails_with("GC failed");
    r.fails_with("gc refused by the fake plugin");
    assert!(conf.exists(), "kept for a retry");
    plugin(true);
    rm().ok();
    assert!(!conf.exists());
    env.assert_clean();
}

/// The kernel side of `network rm` is the bridge plugin's GC with no valid attachment: it
/// removes the network's masquerade chains and the bridge tether created, and never a bridge
/// that was there before.
#[test]
fn network_rm_removes_the_networks_bridge_and_rules() {
    require_plugins(&["bridge", "host-local"]);
    let env = Env::new();
    env.host
        .sh("ip", &["link", "add", "usrbr0", "type", "bridge"]);
    env.tether(&["network", "create", "made", "--subnet", "10.93.5.0/24"])
        .ok();
    env.tether(&[
        "network",
        "create",
        "theirs",
        "--subnet",
        "10.93.6.0/24",
        "--bridge",
        "usrbr0",
    ])
    .ok();
    let made: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.config_dir.join("made.conflist")).unwrap())
            .unwrap();
    let made_bridge = made["plugins"][0]["bridge"].as_str().unwrap().to_string();
    env.run_detached("m", &["--net=made"], &["sleep", "60"]);
    env.run_detached("t", &["--net=theirs"], &["sleep", "60"]);
    assert!(env.host_links().contains(&made_bridge));
    let masq = |env: &Env| env.nat_lines(|l| l.contains("TETHER-MASQ-"));
    assert!(!masq(&env).is_empty(), "both networks masquerade");
    env.tether(&["rm", "-f", "m", "t"]).ok();
    env.tether(&["network", "rm", "made", "theirs"]).ok();
    assert_eq!(masq(&env), Vec::<String>::new(), "masquerade chains left");
    let links = env.host_links();
    assert!(
        !links.contains(&made_bridge),
        "tether's bridge left: {links:?}"
    );
    assert!(
        links.contains(&"usrbr0".to_string()),
        "the user's bridge was removed"
    );
    env.host.sh("ip", &["link", "del", "usrbr0"]);
    env.assert_clean();
}
