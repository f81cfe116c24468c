//! A throwaway multi-host cluster for the overlay tests, all inside namespaces this test made:
//!
//! ```text
//!   switch netns: bridge ul (192.168.77.1/24)  ── etcd listens on 192.168.77.1 only
//!      ├─veth── host0 netns: eth0 192.168.77.10/24 ─ tether overlay agent ─ tvx-<vni>
//!      │                     tob-<vni> (gateway .1, made by hand) ─veth─ container netns (.2)
//!      ├─veth── host1 netns: eth0 192.168.77.11/24 ...
//!      └─veth── hostN ...
//! ```
//!
//! The container side is built by hand (a bridge named like the plugin's, carrying the gateway
//! from lease.json, one veth into a container namespace): the overlay CNI plugin is a separate
//! piece; these tests prove the agent's data plane.
//! `end_to_end.rs` attaches containers through the real plugin and `tether run --net` instead.
#![allow(dead_code)]

use netns_fixtures::{Netns, bin_dir, require_privileges, success_stdout};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tether_overlay_state::{HostLease, NetworkDir};

pub const NET: &str = "ov";
pub const ETCD_IP: &str = "192.168.77.1";

pub fn tether() -> PathBuf {
    let p = bin_dir().join("tether");
    assert!(
        p.is_file(),
        "{} missing: cargo build -p tether first",
        p.display()
    );
    p
}

pub struct Host {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub dir: TempDir,
    agent: Option<Child>,
    pub container: Option<(Netns, Ipv4Addr)>,
}

impl Host {
    pub fn state(&self) -> NetworkDir {
        NetworkDir::new(self.dir.path(), NET).unwrap()
    }
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }
}

pub struct Etcd {
    child: Child,
    pub data: TempDir,
}

pub struct Cluster {
    pub switch: Netns,
    pub hosts: Vec<Host>,
    pub etcd: Option<Etcd>,
    etcd_data: Option<TempDir>,
    pub url: String,
    pub vni: u32,
    pub ttl: u32,
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Cluster {
    /// The switch, `n` hosts and a running etcd (nothing initialised yet).
    pub fn new(n: usize, vni: u32, ttl: u32) -> Cluster {
        require_privileges();
        let switch = Netns::new().unwrap();
        switch.sh("ip", &["link", "add", "ul", "type", "bridge"]);
        switch.sh(
            "ip",
            &["addr", "add", &format!("{ETCD_IP}/24"), "dev", "ul"],
        );
        switch.sh("ip", &["link", "set", "ul", "up"]);
        let mut c = Cluster {
            switch,
            hosts: Vec::new(),
            etcd: None,
            etcd_data: Some(tempfile::tempdir().unwrap()),
            url: format!("http://{ETCD_IP}:2379"),
            vni,
            ttl,
        };
        for _ in 0..n {
            c.add_host();
        }
        c.start_etcd();
        c
    }

    /// One more host on the underlay; returns its index.
    pub fn add_host(&mut self) -> usize {
        let i = self.hosts.len();
        let ns = Netns::new().unwrap();
        let ip = Ipv4Addr::new(192, 168, 77, 10 + i as u8);
        let h = self.switch.netlink();
        let br = h.link_by_name("ul").unwrap().unwrap().index;
        let port = format!("p{i}");
        h.create_veth(&port, None, Some(br), "eth0", ns.as_fd(), None, None)
            .unwrap();
        ns.sh("ip", &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.sh("ip", &["link", "set", "eth0", "up"]);
        let idx = ns.netlink().link_by_name("eth0").unwrap().unwrap().index;
        ns.wait_oper_up(idx);
        self.hosts.push(Host {
            ns,
            ip,
            dir: tempfile::tempdir().unwrap(),
            agent: None,
            container: None,
        });
        i
    }

    pub fn start_etcd(&mut self) {
        assert!(self.etcd.is_none(), "etcd already running");
        let data = self.etcd_data.take().unwrap();
        let client = format!("http://{ETCD_IP}:2379");
        let peer = format!("http://{ETCD_IP}:2380");
        let log = std::fs::File::create(data.path().join("etcd.log")).unwrap();
        let child = self
            .switch
            .command("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(data.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian etcd-server)");
        self.etcd = Some(Etcd { child, data });
        wait_for(Duration::from_secs(15), "etcd to answer", || {
            let out = self.etcdctl(&["endpoint", "health"]);
            out.status.success().then_some(())
        });
    }

    /// Stops etcd (SIGTERM by pid, then wait); its data directory stays for a restart.
    pub fn stop_etcd(&mut self) {
        let mut e = self.etcd.take().expect("etcd running");
        signal(e.child.id(), libc::SIGTERM);
        let _ = e.child.wait();
        self.etcd_data = Some(e.data);
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.switch
            .command("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.url,
                "--dial-timeout",
                "2s",
                "--command-timeout",
                "3s",
            ])
            .args(args)
            .output()
            .unwrap()
    }

    /// Every key under the overlay prefix.
    pub fn keys(&self) -> Vec<String> {
        let out = success_stdout(
            &self.etcdctl(&["get", "--prefix", "--keys-only", "/tether/overlay/"]),
            "etcdctl get",
        );
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `tether overlay ARGS` inside host `i`'s namespace.
    pub fn tether(&self, i: usize, args: &[&str]) -> Output {
        self.hosts[i]
            .ns
            .command(tether())
            .arg("overlay")
            .args(args)
            .env("TETHER_OVERLAY_DIR", self.hosts[i].dir.path())
            .env("TETHER_ROOT", self.hosts[i].dir.path().join("root"))
            .output()
            .unwrap()
    }

    pub fn init(&self, subnet: &str, extra: &[&str]) {
        let args = [
            &["init", NET, "--etcd", &self.url, "--subnet", subnet][..],
            extra,
        ]
        .concat();
        success_stdout(&self.tether(0, &args), "tether overlay init");
    }

    pub fn start_agent(&mut self, i: usize) {
        self.start_agent_with(i, &[]);
    }

    pub fn start_agent_with(&mut self, i: usize, extra: &[&str]) {
        let h = &self.hosts[i];
        assert!(h.agent.is_none(), "agent {i} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(h.log())
            .unwrap();
        let child =
            h.ns.command(tether())
                .args([
                    "overlay", "agent", NET, "--etcd", &self.url, "--iface", "eth0",
                ])
                .args(["--lease-ttl", &self.ttl.to_string()])
                .args(extra)
                .env("TETHER_OVERLAY_DIR", h.dir.path())
                .env("TETHER_ROOT", h.dir.path().join("root"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
        self.hosts[i].agent = Some(child);
    }

    /// SIGTERM (and wait: the agent cleans up) or SIGKILL (it leaves everything).
    pub fn stop_agent(&mut self, i: usize, sig: i32) {
        let mut c = self.hosts[i].agent.take().expect("agent running");
        signal(c.id(), sig);
        let end = Instant::now() + Duration::from_secs(10);
        while c.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "agent {i} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether agent `i` is still running (false once it exited, e.g. on a startup error).
    pub fn agent_exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.hosts[i]
            .agent
            .as_mut()
            .and_then(|c| c.try_wait().unwrap())
    }

    pub fn wait_lease(&self, i: usize) -> HostLease {
        wait_for(
            Duration::from_secs(15),
            &format!("host {i}'s lease.json"),
            || self.hosts[i].state().read_lease().ok().flatten(),
        )
    }

    /// Waits until host `i` has programmed exactly `n` peers (routes on tvx).
    pub fn wait_routes(&self, i: usize, n: usize) {
        wait_for(
            Duration::from_secs(15),
            &format!("host {i} to have {n} peer routes"),
            || (self.overlay_routes(i).len() == n).then_some(()),
        );
    }

    /// The routes host `i` has through its VXLAN device.
    pub fn overlay_routes(&self, i: usize) -> Vec<String> {
        let dev = tether_overlay_state::vxlan_device(self.vni);
        let out = self.hosts[i]
            .ns
            .command("ip")
            .args(["-4", "route", "show", "dev", &dev])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// A container on host `i`: bridge tob-<vni> with the lease's gateway, a veth into a new
    /// namespace carrying the subnet's second host address and the lease's MTU.
    pub fn attach_container(&mut self, i: usize) -> Ipv4Addr {
        let lease = self.wait_lease(i);
        let ipnetwork::IpNetwork::V4(subnet) = lease.subnet else {
            panic!("v4")
        };
        let gw = subnet.nth(1).unwrap();
        let addr = subnet.nth(2).unwrap();
        let br = tether_overlay_state::bridge_name(lease.vni);
        let h = &self.hosts[i];
        let nl = h.ns.netlink();
        let bri = match nl.link_by_name(&br).unwrap() {
            Some(l) => l.index,
            None => {
                let l = nl.create_bridge(&br, Some(lease.mtu), false).unwrap();
                h.ns.sh(
                    "ip",
                    &[
                        "addr",
                        "add",
                        &format!("{gw}/{}", subnet.prefix()),
                        "dev",
                        &br,
                    ],
                );
                h.ns.sh("ip", &["link", "set", &br, "up"]);
                l.index
            }
        };
        let c = Netns::new().unwrap();
        let vi = nl
            .create_veth(
                "vc0",
                Some(lease.mtu),
                Some(bri),
                "eth0",
                c.as_fd(),
                None,
                Some(lease.mtu),
            )
            .unwrap();
        h.ns.sh("ip", &["link", "set", "vc0", "up"]);
        c.sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{addr}/{}", subnet.prefix()),
                "dev",
                "eth0",
            ],
        );
        c.sh("ip", &["link", "set", "eth0", "up"]);
        c.sh("ip", &["route", "add", "default", "via", &gw.to_string()]);
        let ci = c.netlink().link_by_name("eth0").unwrap().unwrap().index;
        c.wait_oper_up(ci);
        h.ns.wait_oper_up(vi);
        self.hosts[i].container = Some((c, addr));
        addr
    }

    /// A container on host `i` attached by the real `overlay` CNI plugin, once the agent has a
    /// lease (ADD with the conflist
    /// `{"type": "overlay", "network": NET}`, CNI_PATH = the build directory); returns its address.
    pub fn attach_with_plugin(&mut self, i: usize) -> Ipv4Addr {
        self.wait_lease(i);
        let c = Netns::new().unwrap();
        let r = self.plugin(i, "ADD", Some(&c)).ok();
        let a = r["ips"][0]["address"].as_str().unwrap();
        let addr: Ipv4Addr = a.split('/').next().unwrap().parse().unwrap();
        self.hosts[i].container = Some((c, addr));
        addr
    }

    /// DEL of host `i`'s plugin-attached container (works with its agent stopped).
    pub fn detach_with_plugin(&mut self, i: usize) {
        self.plugin(i, "DEL", None).ok_empty();
        self.hosts[i].container = None;
    }

    fn plugin(&self, i: usize, cmd: &str, ns: Option<&Netns>) -> netns_fixtures::CniOutput {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "ov-bench", "type": "overlay", "network": NET,
        });
        let mut r = self.hosts[i]
            .ns
            .cni(netns_fixtures::plugin("overlay"))
            .command(cmd)
            .container_id(&format!("ctr{i}"))
            .ifname("eth0")
            .cni_path([bin_dir()])
            .env("TETHER_OVERLAY_DIR", self.hosts[i].dir.path())
            .stdin(conf);
        if let Some(ns) = ns {
            r = r.netns(ns.path());
        }
        r.run()
    }

    /// Removes host `i`'s hand-made container and bridge (the namespace goes with its value).
    pub fn detach_container(&mut self, i: usize) {
        let br = tether_overlay_state::bridge_name(self.vni);
        let nl = self.hosts[i].ns.netlink();
        let _ = nl.del_link_by_name("vc0");
        let _ = nl.del_link_by_name(&br);
        self.hosts[i].container = None;
    }

    pub fn container(&self, i: usize) -> &Netns {
        &self.hosts[i]
            .container
            .as_ref()
            .expect("container attached")
            .0
    }
    pub fn container_ip(&self, i: usize) -> Ipv4Addr {
        self.hosts[i]
            .container
            .as_ref()
            .expect("container attached")
            .1
    }

    /// `ping -c1 -W1` from host `from`'s container to host `to`'s.
    pub fn ping(&self, from: usize, to: usize) -> bool {
        ping_args(self.container(from), self.container_ip(to), &[])
    }

    /// Hosts 0 and 1 each with a running agent and a container, both routes programmed and
    /// the two containers reaching each other: the steady state most failure tests start from.
    pub fn two_hosts_meshed(&mut self) {
        self.start_agent(0);
        self.start_agent(1);
        self.attach_container(0);
        self.attach_container(1);
        self.wait_routes(0, 1);
        self.wait_full_mesh(&[0, 1]);
    }

    /// Waits until every container reaches every other one.
    pub fn wait_full_mesh(&self, hosts: &[usize]) {
        for &a in hosts {
            for &b in hosts {
                if a != b {
                    wait_for(
                        Duration::from_secs(15),
                        &format!("ping {a} → {b}"),
                        || self.ping(a, b).then_some(()),
                    );
                }
            }
        }
    }

    /// Asserts host `i` holds no overlay state: no device, no files.
    pub fn assert_host_clean(&self, i: usize) {
        let h = &self.hosts[i];
        let dev = tether_overlay_state::vxlan_device(self.vni);
        assert!(
            h.ns.netlink().link_by_name(&dev).unwrap().is_none(),
            "host {i}: {dev} left"
        );
        let fdb = h.ns.sh("bridge", &["fdb", "show"]);
        assert!(!fdb.contains(&dev), "host {i}: FDB entries left: {fdb}");
        let neigh = h.ns.sh("ip", &["neigh", "show", "nud", "permanent"]);
        assert!(
            neigh.trim().is_empty(),
            "host {i}: neighbours left: {neigh}"
        );
        let routes = h.ns.sh("ip", &["-4", "route", "show"]);
        assert!(
            !routes.contains("onlink"),
            "host {i}: overlay routes left: {routes}"
        );
        let d = h.state();
        for f in [d.lease_file(), d.peers_file(), d.pid_file()] {
            assert!(!f.exists(), "host {i}: {} left", f.display());
        }
    }

    /// SIGTERM every agent, then: no device, route, neighbour, FDB entry, file or subnet key left.
    pub fn teardown_and_assert_clean(&mut self) {
        for i in 0..self.hosts.len() {
            if self.hosts[i].agent.is_some() {
                self.stop_agent(i, libc::SIGTERM);
            }
        }
        for i in 0..self.hosts.len() {
            self.assert_host_clean(i);
        }
        let keys: Vec<_> = self
            .keys()
            .into_iter()
            .filter(|k| k.contains("/subnets/"))
            .collect();
        assert!(keys.is_empty(), "subnet keys left in etcd: {keys:?}");
        // The definition is not a host's: remove it like an operator would, then none is left.
        success_stdout(
            &self.etcdctl(&["del", "--prefix", "/tether/overlay/"]),
            "etcdctl del",
        );
        assert!(self.keys().is_empty());
    }
}

pub fn ping_args(ns: &Netns, to: Ipv4Addr, extra: &[&str]) -> bool {
    ns.command("ping")
        .args(["-n", "-q", "-c1", "-W1"])
        .args(extra)
        .arg(to.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test spawned and has not reaped.
    unsafe { libc::kill(pid as i32, sig) };
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut c) = h.agent.take() {
                signal(c.id(), libc::SIGKILL);
                let _ = c.wait();
            }
        }
        if let Some(mut e) = self.etcd.take() {
            signal(e.child.id(), libc::SIGKILL);
            let _ = e.child.wait();
        }
    }
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
