//! Issue 12 end to end: the real agent on each of three hosts, and containers attached through
//! the real `overlay` CNI plugin, both by a direct CNI call and by `tether run --net NAME`.
//!
//! ```text
//!   switch netns: ul 192.168.77.1, etcd               outside netns (198.51.100.2, host 0 only)
//!     ├─ host0: agent · tvx-61 · tob-61 ─ c0 (plugin ADD, direct)  ── masqueraded ──┘
//!     ├─ host1: agent · tvx-61 · tob-61 ─ c1 (plugin ADD, direct)
//!     └─ host2: agent · tvx-61 · tob-61 ─ tether run --net ov --rootfs busybox
//! ```
//!
//! Both halves were written apart (the agent's tests attach hand-made containers, the plugin's
//! read a hand-written lease); this test is where their contract (lease.json, device and bridge
//! names, MTU, who removes what) is checked against each other. Two smaller clusters check the
//! same contract for host-gw (the lease's full MTU reaches the containers) and for an agent
//! restarted under attached containers (it must take back their subnet).

mod cluster;

use cluster::{Cluster, NET};
use netns_fixtures::{CniOutput, EchoServer, Netns, bin_dir, plugin, tcp_echo, udp_echo};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const VNI: u32 = 61;
const BRIDGE: &str = "tob-61";

/// The conflist a runtime other than tether would use: nothing but the network's name.
fn conf() -> Value {
    json!({"cniVersion": "1.0.0", "name": "ov-direct", "type": "overlay", "network": NET})
}

fn cni(
    c: &Cluster,
    i: usize,
    cmd: &str,
    cid: &str,
    ns: Option<&Netns>,
    prev: Option<&Value>,
) -> CniOutput {
    let mut conf = conf();
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    let mut r = c.hosts[i]
        .ns
        .cni(plugin("overlay"))
        .command(cmd)
        .container_id(cid)
        .ifname("eth0")
        .cni_path([bin_dir()])
        .env("TETHER_OVERLAY_DIR", c.hosts[i].dir.path())
        .stdin(conf);
    if let Some(ns) = ns {
        r = r.netns(ns.path());
    }
    r.run()
}

fn ip_of(r: &Value) -> IpAddr {
    let a = r["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().parse().unwrap()
}

/// `tether` on one host with that host's own --root, --config-dir and overlay state directory.
/// It enters the host's namespace by path (nsenter), so it holds no borrow of the cluster and the
/// test can stop that host's agent while tether's container still runs.
struct Tether {
    netns: PathBuf,
    dir: PathBuf,
    cgroup_parent: String,
}

impl Tether {
    fn new(c: &Cluster, i: usize) -> Tether {
        Tether {
            netns: c.hosts[i].ns.path(),
            dir: c.hosts[i].dir.path().to_path_buf(),
            cgroup_parent: format!("tether-ove2e-{}-{i}", std::process::id()),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let d = &self.dir;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(cluster::tether())
            .arg("--root")
            .arg(d.join("root"))
            .arg("--config-dir")
            .arg(d.join("net.d"))
            .args(args)
            .env("TETHER_CGROUP_PARENT", &self.cgroup_parent)
            .env("TETHER_CONFIG", d.join("no-config.json"))
            .env("CNI_PATH", bin_dir())
            .env("TETHER_OVERLAY_DIR", d)
            .env_remove("TETHER_CGROUP_MANAGER")
            .env_remove("CNI_ARGS")
            .stdin(Stdio::null());
        cmd
    }

    fn out(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        netns_fixtures::success_stdout(&self.out(args), &format!("tether {args:?}"))
    }
}

impl Drop for Tether {
    fn drop(&mut self) {
        // A failed test must not leave containers or cgroups behind.
        if let Ok(out) = self.cmd(&["ps", "-a", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.cmd(&["rm", "-f", id]).output();
            }
        }
        let out = Command::new("find")
            .args(["/sys/fs/cgroup", "-maxdepth", "4", "-type", "d", "-name"])
            .arg(&self.cgroup_parent)
            .output()
            .unwrap();
        for d in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn busybox_rootfs(dir: &std::path::Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static must be installed at /bin/busybox");
    for applet in ["sh", "ping", "nc", "sleep", "echo", "ip"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root
}

/// `ping -c1 -W1 -M do -s SIZE`: (answered, what ping printed).
fn ping_df(ns: &Netns, to: IpAddr, size: u32) -> (bool, String) {
    let out = ns
        .command("ping")
        .args(["-n", "-c1", "-W1", "-M", "do", "-s", &size.to_string()])
        .arg(to.to_string())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// One echo request must be answered: the peers are programmed before the test attaches
/// anything, and permanent neighbour and FDB entries leave no first packet to lose.
#[track_caller]
fn ping(ns: &Netns, to: IpAddr) {
    let IpAddr::V4(to) = to else {
        panic!("the overlay is IPv4")
    };
    assert!(cluster::ping_args(ns, to, &[]), "first ping to {to} lost");
}

fn masq_lines(ns: &Netns) -> Vec<String> {
    ns.sh("iptables-save", &["-t", "nat"])
        .lines()
        .filter(|l| l.contains("TETHER-MASQ-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn containers_attached_by_the_real_plugin_and_tether_run_talk_across_three_hosts_and_teardown_leaves_nothing()
 {
    let mut c = Cluster::new(3, VNI, 3);
    c.init("10.230.0.0/16", &["--vni", &VNI.to_string()]);
    for i in 0..3 {
        c.start_agent(i);
    }
    let leases: Vec<_> = (0..3).map(|i| c.wait_lease(i)).collect();
    for i in 0..3 {
        c.wait_routes(i, 2);
    }
    let outside = c.hosts[0].ns.add_outside();

    // Hosts 0 and 1: a direct CNI call with the overlay conflist, as any runtime would.
    let (c0, c1) = (Netns::new().unwrap(), Netns::new().unwrap());
    let r0 = cni(&c, 0, "ADD", "c0", Some(&c0), None).ok();
    let r1 = cni(&c, 1, "ADD", "c1", Some(&c1), None).ok();
    let (ip0, ip1) = (ip_of(&r0), ip_of(&r1));
    for (ip, l) in [(ip0, &leases[0]), (ip1, &leases[1])] {
        assert!(
            l.subnet.contains(ip),
            "{ip} outside its host's {}",
            l.subnet
        );
    }
    let mtu = c0.ip_json(&["link", "show", "eth0"])[0]["mtu"].clone();
    assert_eq!(
        mtu,
        json!(leases[0].mtu),
        "the container gets the lease's MTU"
    );

    // Host 2: `tether network create --driver overlay`, then `tether run --net`.
    let t = Tether::new(&c, 2);
    let rootfs = busybox_rootfs(c.hosts[2].dir.path());
    t.ok(&["network", "create", NET, "--driver", "overlay"]);
    t.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--net",
        NET,
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "sleep",
        "120",
    ]);
    let st: Value = serde_json::from_str(&t.ok(&["inspect", "web"])).unwrap();
    let ip2 = ip_of(&st[0]["network"]["result"]);
    assert!(
        leases[2].subnet.contains(ip2),
        "{ip2} not in {}",
        leases[2].subnet
    );

    // ICMP across every pair of hosts, both directions.
    ping(&c0, ip1);
    ping(&c1, ip0);
    ping(&c0, ip2);
    ping(&c1, ip2);
    let from_web = |to: IpAddr| {
        t.out(&["exec", "web", "--", "ping", "-c1", "-W2", &to.to_string()])
            .status
            .success()
    };
    assert!(from_web(ip0), "tether's container -> host 0's");
    assert!(from_web(ip1), "tether's container -> host 1's");

    // TCP and UDP with the senders' own addresses (never masqueraded inside the overlay).
    let tcp = EchoServer::tcp(&c1, SocketAddr::new(ip1, 0));
    assert_eq!(tcp_echo(&c0, tcp.addr(), b"tcp 0->1").unwrap(), b"tcp 0->1");
    let udp = EchoServer::udp(&c1, SocketAddr::new(ip1, 0));
    assert_eq!(udp_echo(&c0, udp.addr(), b"udp 0->1").unwrap(), b"udp 0->1");
    let send = format!("echo from-web | nc -w 3 {ip1} {}", tcp.addr().port());
    let out = t.out(&["exec", "web", "--", "sh", "-c", &send]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("from-web"),
        "tcp web -> host 1: {out:?}"
    );
    let peers: Vec<IpAddr> = tcp.peers().iter().map(SocketAddr::ip).collect();
    assert_eq!(
        peers,
        vec![ip0, ip2],
        "overlay traffic must not be masqueraded"
    );
    assert_eq!(udp.peers()[0].ip(), ip0);
    drop((tcp, udp));

    // The MTU: 1400 bytes with DF pass end to end, 1423 (1451 on the wire) fail locally.
    let (ok, text) = ping_df(&c0, ip1, 1400);
    assert!(ok, "1400-byte DF ping must pass: {text}");
    let (ok, text) = ping_df(&c0, ip1, 1423);
    assert!(!ok, "a 1451-byte DF packet must not pass: {text}");
    assert!(
        text.contains("mtu=1450") || text.contains("mtu = 1450"),
        "the error must name the overlay's MTU: {text}"
    );

    // Leaving the overlay: masqueraded to host 0's address on that link.
    let far = EchoServer::tcp(&outside.ns, SocketAddr::new(outside.outside_v4.into(), 0));
    assert_eq!(tcp_echo(&c0, far.addr(), b"out").unwrap(), b"out");
    assert_eq!(far.peers()[0].ip(), IpAddr::from(outside.host_v4));
    drop(far);

    // `tether network inspect` on host 2: its host subnet and the two other hosts.
    let insp: Value = serde_json::from_str(&t.ok(&["network", "inspect", NET])).unwrap();
    assert_eq!(insp["driver"], "overlay");
    assert_eq!(insp["overlay"]["hostSubnet"], leases[2].subnet.to_string());
    let mut peer_subnets: Vec<String> = insp["overlay"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["subnet"].as_str().unwrap().to_string())
        .collect();
    peer_subnets.sort();
    let mut want = vec![leases[0].subnet.to_string(), leases[1].subnet.to_string()];
    want.sort();
    assert_eq!(peer_subnets, want, "{insp}");

    // The agents leaving (SIGTERM) remove their VXLAN devices but not the plugin's bridge or
    // its containers' attachments; DEL then works without the agent, direct or by `tether rm`.
    c.stop_agent(2, libc::SIGTERM);
    assert!(
        !from_web(ip1),
        "host 2 left the overlay: its container no longer reaches host 1"
    );
    t.ok(&["rm", "-f", "web"]);
    t.ok(&["network", "rm", NET]);
    drop(t);
    c.stop_agent(0, libc::SIGTERM);
    assert!(
        c.hosts[0]
            .ns
            .netlink()
            .link_by_name(BRIDGE)
            .unwrap()
            .is_some(),
        "the agent must leave the plugin's {BRIDGE} alone"
    );
    assert!(
        !masq_lines(&c.hosts[0].ns).is_empty(),
        "masquerading is the plugin's, kept"
    );
    cni(&c, 0, "DEL", "c0", None, Some(&r0)).ok_empty();
    cni(&c, 0, "DEL", "c0", None, Some(&r0)).ok_empty();
    cni(&c, 1, "DEL", "c1", None, Some(&r1)).ok_empty();

    // Nothing of the plugin's half is left: bridge, masquerading, records, addresses.
    for i in 0..3 {
        let h = &c.hosts[i];
        assert!(
            h.ns.netlink().link_by_name(BRIDGE).unwrap().is_none(),
            "host {i}: {BRIDGE} left"
        );
        assert!(masq_lines(&h.ns).is_empty(), "host {i}: masquerading left");
        let d = h.state();
        assert!(
            d.attachments().unwrap().is_empty(),
            "host {i}: records left"
        );
        let ipam = d.ipam_dir().join(NET);
        let leased: Vec<_> = std::fs::read_dir(&ipam)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|f| f.parse::<IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            leased.is_empty(),
            "host {i}: addresses still leased: {leased:?}"
        );
    }
    // The agents' half: device, routes, neighbours, FDB entries, files, etcd keys.
    c.teardown_and_assert_clean();
    assert_no_overlay_route(&c, "10.230.");
}

/// Not one route into the overlay is left on any host, whoever made it (agent or bridge).
fn assert_no_overlay_route(c: &Cluster, prefix: &str) {
    for (i, h) in c.hosts.iter().enumerate() {
        let routes = h.ns.sh("ip", &["-4", "route", "show", "table", "all"]);
        assert!(
            !routes.contains(prefix),
            "host {i}: overlay routes left: {routes}"
        );
    }
}

#[test]
fn with_host_gw_the_plugin_gives_containers_the_full_underlay_mtu_and_they_talk_across_hosts() {
    let mut c = Cluster::new(2, 62, 3);
    c.init("10.231.0.0/16", &["--vni", "62", "--backend", "host-gw"]);
    for i in 0..2 {
        c.start_agent(i);
    }
    let leases: Vec<_> = (0..2).map(|i| c.wait_lease(i)).collect();
    let ctrs = [Netns::new().unwrap(), Netns::new().unwrap()];
    let r: Vec<Value> = (0..2)
        .map(|i| cni(&c, i, "ADD", &format!("g{i}"), Some(&ctrs[i]), None).ok())
        .collect();
    for i in 0..2 {
        assert_eq!(leases[i].mtu, 1500, "host-gw adds nothing on the wire");
        let mtu = ctrs[i].ip_json(&["link", "show", "eth0"])[0]["mtu"].clone();
        assert_eq!(
            mtu,
            json!(1500),
            "host {i}: the container gets the lease's MTU"
        );
    }
    // Each agent must have seen the other's lease and routed its subnet via its address, or
    // the first echo request (or its reply) has no route yet.
    for i in 0..2 {
        cluster::wait_for(
            std::time::Duration::from_secs(15),
            &format!("host {i} to route the other host's subnet via the underlay"),
            || {
                let routes = c.hosts[i]
                    .ns
                    .sh("ip", &["-4", "route", "show", "dev", "eth0"]);
                routes
                    .lines()
                    .any(|l| l.starts_with("10.231.") && l.contains(" via 192.168.77."))
                    .then_some(())
            },
        );
    }
    let (ip0, ip1) = (ip_of(&r[0]), ip_of(&r[1]));
    ping(&ctrs[0], ip1);
    ping(&ctrs[1], ip0);
    let (ok, text) = ping_df(&ctrs[0], ip1, 1472);
    assert!(ok, "a full 1500-byte DF packet must pass: {text}");
    let tcp = EchoServer::tcp(&ctrs[1], SocketAddr::new(ip1, 0));
    assert_eq!(tcp_echo(&ctrs[0], tcp.addr(), b"gw").unwrap(), b"gw");
    assert_eq!(tcp.peers()[0].ip(), ip0, "not masqueraded");
    drop(tcp);
    for (i, prev) in r.iter().enumerate() {
        cni(&c, i, "DEL", &format!("g{i}"), None, Some(prev)).ok_empty();
        assert!(
            masq_lines(&c.hosts[i].ns).is_empty(),
            "host {i}: masquerading left"
        );
        assert!(
            c.hosts[i]
                .ns
                .netlink()
                .link_by_name("tob-62")
                .unwrap()
                .is_none()
        );
    }
    c.teardown_and_assert_clean();
    assert_no_overlay_route(&c, "10.231.");
}

#[test]
fn an_agent_stopped_and_restarted_under_attached_containers_takes_back_their_subnet() {
    let mut c = Cluster::new(2, 63, 3);
    c.init("10.232.0.0/16", &["--vni", "63"]);
    for i in 0..2 {
        c.start_agent(i);
    }
    let before = c.wait_lease(0);
    let (c0, c1) = (Netns::new().unwrap(), Netns::new().unwrap());
    let r0 = cni(&c, 0, "ADD", "r0", Some(&c0), None).ok();
    let r1 = cni(&c, 1, "ADD", "r1", Some(&c1), None).ok();
    c.wait_routes(1, 1);
    c.wait_routes(0, 1);
    ping(&c1, ip_of(&r0));
    // SIGTERM revokes the lease and removes lease.json, but c0 stays on the subnet's bridge.
    c.stop_agent(0, libc::SIGTERM);
    c.wait_routes(1, 0);
    c.start_agent(0);
    let after = c.wait_lease(0);
    assert_eq!(
        after.subnet, before.subnet,
        "the restarted agent must lease the subnet its host's containers are on"
    );
    // Both directions: host 1 must route to host 0's subnet again, and the restarted agent
    // must have programmed host 1 on its new device, or the echo reply has no way back.
    c.wait_routes(1, 1);
    c.wait_routes(0, 1);
    ping(&c1, ip_of(&r0));
    cni(&c, 0, "DEL", "r0", None, Some(&r0)).ok_empty();
    cni(&c, 1, "DEL", "r1", None, Some(&r1)).ok_empty();
    c.teardown_and_assert_clean();
    assert_no_overlay_route(&c, "10.232.");
}
