//! A fake host with an overlay agent's state written by hand (the lease the agent would write),
//! and our `overlay` plugin run through the real protocol, with `CNI_PATH` = the build directory
//! (`overlay`, `bridge`, `host-local`).
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use netns_fixtures::{Cni, CniOutput, Netns, Snapshot, TestHost, bin_dir, plugin};
use serde_json::{Value, json};
use tether_overlay_state::{HostLease, NetworkDir};

pub const NET: &str = "ov1";
pub const VNI: u32 = 42;
pub const OVERLAY: &str = "10.200.0.0/16";
pub const BRIDGE: &str = "tob-42";

/// One fake host: its namespace, temp dirs, and its overlay state directory.
pub struct Host {
    pub th: TestHost,
    pub state: PathBuf,
}

impl Host {
    pub fn new() -> Host {
        plugin("bridge");
        plugin("host-local");
        let th = TestHost::new();
        let state = th.dir().join("overlay");
        Host { th, state }
    }

    /// A host whose agent has leased it `SUBNET_A`: where most single-host tests start.
    pub fn leased() -> Host {
        let h = Host::new();
        h.write_lease(&h.lease(SUBNET_A));
        h
    }

    pub fn ns(&self) -> &Netns {
        &self.th.host
    }

    pub fn dir(&self) -> NetworkDir {
        NetworkDir::new(&self.state, NET).unwrap()
    }

    /// The lease an agent on this host would write: `subnet` of the overlay, MTU 1450, held by
    /// this (live) test process.
    pub fn lease(&self, subnet: &str) -> HostLease {
        HostLease {
            network: NET.into(),
            overlay: OVERLAY.parse().unwrap(),
            subnet: subnet.parse().unwrap(),
            mtu: 1450,
            vni: VNI,
            backend: "vxlan".into(),
            public_ip: "192.168.50.1".parse().unwrap(),
            agent_pid: std::process::id(),
        }
    }

    pub fn write_lease(&self, lease: &HostLease) {
        self.dir().write_lease(lease).unwrap();
    }

    /// `{"type": "overlay", "network": "ov1"}` in a list called `cni_name`, plus `extra`.
    pub fn conf_named(&self, cni_name: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0",
            "name": cni_name,
            "type": "overlay",
            "network": NET,
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            c[k] = v;
        }
        c
    }

    pub fn conf(&self, extra: Value) -> Value {
        self.conf_named("ovnet", extra)
    }

    /// The plugin run on the host for `cmd`, with this host's overlay state and `conf`.
    fn plugin_cmd(&self, cmd: &str, conf: &Value) -> Cni<'_> {
        self.ns()
            .cni(plugin("overlay"))
            .command(cmd)
            .cni_path([bin_dir()])
            .env("TETHER_OVERLAY_DIR", &self.state)
            .stdin(conf)
    }

    fn run(&self, cmd: &str, cid: &str, netns: Option<&Path>, conf: &Value) -> CniOutput {
        let mut c = self.plugin_cmd(cmd, conf).container_id(cid).ifname("eth0");
        if let Some(ns) = netns {
            c = c.netns(ns);
        }
        c.run()
    }

    pub fn add(&self, ctr: &Netns, cid: &str, conf: &Value) -> CniOutput {
        self.run("ADD", cid, Some(&ctr.path()), conf)
    }

    pub fn del(&self, cid: &str, conf: &Value, prev: Option<&Value>) -> CniOutput {
        let mut conf = conf.clone();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        self.run("DEL", cid, None, &conf)
    }

    pub fn check(&self, ctr: &Netns, cid: &str, conf: &Value, prev: &Value) -> CniOutput {
        let mut conf = conf.clone();
        conf["prevResult"] = prev.clone();
        self.run("CHECK", cid, Some(&ctr.path()), &conf)
    }

    pub fn status(&self, conf: &Value) -> CniOutput {
        self.plugin_cmd("STATUS", conf).run()
    }

    pub fn gc(&self, conf: &Value, valid: &[&str]) -> CniOutput {
        let mut conf = conf.clone();
        conf["cni.dev/valid-attachments"] = valid
            .iter()
            .map(|c| json!({"containerID": c, "ifname": "eth0"}))
            .collect();
        self.plugin_cmd("GC", &conf).run()
    }

    /// Links, addresses, routes, iptables and every file under the overlay state directory.
    pub fn snapshot(&self) -> Snapshot {
        self.ns().snapshot(&[&self.state])
    }

    pub fn link(&self, name: &str) -> Option<tether_netlink::Link> {
        self.ns().netlink().link_by_name(name).unwrap()
    }

    pub fn records(&self) -> Vec<(String, String)> {
        self.dir().attachments().unwrap()
    }

    /// The masquerade chains' lines in the nat table.
    pub fn masq_lines(&self) -> Vec<String> {
        self.ns()
            .sh("iptables-save", &["-t", "nat"])
            .lines()
            .filter(|l| l.contains("TETHER-MASQ-"))
            .map(str::to_string)
            .collect()
    }
}

/// After the network's last DEL: everything as before but host-local's `lock` and
/// `last_reserved_ip.*` (kept, as the reference's). No bridge, chain, address, route, lease or
/// record may remain.
#[track_caller]
pub fn assert_nothing_left(before: &Snapshot, after: &Snapshot) {
    let (mut before, mut after) = (before.clone(), after.clone());
    for s in [&mut before, &mut after] {
        s.files.retain(|k, _| {
            let f = k.rsplit('/').next().unwrap_or(k);
            f != "lock" && !f.starts_with("last_reserved_ip.")
        });
    }
    netns_fixtures::assert_snapshot_eq(&before, &after);
}

/// The container's first address from a 1.x result.
pub fn result_ip(r: &Value) -> IpAddr {
    netns_fixtures::result_ips(r)[0]
}

/// Two hosts joined by a veth underlay (`ul0`, 192.168.50.1 and .2/24), each with a hand-made
/// VXLAN device `tvx-42` and, for the other host's subnet, what the agent programs: a route via
/// the peer's VTEP address (onlink), a permanent neighbour entry and an FDB entry.
pub struct Pair {
    pub a: Host,
    pub b: Host,
}

pub const SUBNET_A: &str = "10.200.3.0/24";
pub const SUBNET_B: &str = "10.200.4.0/24";

impl Pair {
    pub fn new() -> Pair {
        let (a, b) = (Host::new(), Host::new());
        a.ns()
            .netlink()
            .create_veth(
                "ul0",
                None,
                None,
                "ul0",
                std::os::fd::AsFd::as_fd(b.ns()),
                None,
                None,
            )
            .unwrap();
        let mut lb = b.lease(SUBNET_B);
        lb.public_ip = "192.168.50.2".parse().unwrap();
        let la = a.lease(SUBNET_A);
        for (h, ul) in [(&a, "192.168.50.1/24"), (&b, "192.168.50.2/24")] {
            h.ns().sh("ip", &["addr", "add", ul, "dev", "ul0"]);
            h.ns().sh("ip", &["link", "set", "ul0", "up"]);
        }
        for (h, l) in [(&a, &la), (&b, &lb)] {
            let local = l.public_ip.to_string();
            h.ns().sh(
                "ip",
                &[
                    "link",
                    "add",
                    "tvx-42",
                    "type",
                    "vxlan",
                    "id",
                    "42",
                    "local",
                    &local,
                    "dev",
                    "ul0",
                    "dstport",
                    "4789",
                    "nolearning",
                ],
            );
            h.ns()
                .sh("ip", &["link", "set", "tvx-42", "mtu", "1450", "up"]);
            let vtep = format!("{}/32", l.subnet.network());
            h.ns().sh("ip", &["addr", "add", &vtep, "dev", "tvx-42"]);
            h.write_lease(l);
        }
        for (h, peer, pl) in [(&a, &b, &lb), (&b, &a, &la)] {
            let mac = vtep_mac(peer);
            let gw = pl.subnet.network().to_string();
            let dst = pl.subnet.to_string();
            let public = pl.public_ip.to_string();
            h.ns().sh(
                "ip",
                &[
                    "neigh",
                    "add",
                    &gw,
                    "lladdr",
                    &mac,
                    "dev",
                    "tvx-42",
                    "nud",
                    "permanent",
                ],
            );
            h.ns().sh(
                "bridge",
                &[
                    "fdb",
                    "append",
                    &mac,
                    "dev",
                    "tvx-42",
                    "dst",
                    &public,
                    "self",
                    "permanent",
                ],
            );
            h.ns().sh(
                "ip",
                &["route", "add", &dst, "via", &gw, "dev", "tvx-42", "onlink"],
            );
        }
        Pair { a, b }
    }
}

fn vtep_mac(h: &Host) -> String {
    let v = h.ns().ip_json(&["link", "show", "tvx-42"]);
    v[0]["address"].as_str().unwrap().to_string()
}

/// `ping -c1 -W1 -M do -s SIZE` from `ns`: true when answered.
pub fn ping_df(ns: &Netns, addr: IpAddr, size: u32) -> bool {
    ns.command("ping")
        .args(["-c1", "-W1", "-M", "do", "-s", &size.to_string()])
        .arg(addr.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
