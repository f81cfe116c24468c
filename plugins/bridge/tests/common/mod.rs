//! Shared helpers: a fake host running our `bridge` binary (IPAM from CNI_PATH: our build
//! directory first, then Debian's plugins), configs, and snapshot filtering.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use netns_fixtures::{CniOutput, Netns, Snapshot, TestHost, bin_dir, plugin};
use serde_json::{Value, json};

pub const NET: &str = "testnet";

/// Our binary, or Debian's reference for the side-by-side tests.
#[derive(Clone, Debug)]
pub struct Plugins {
    pub bridge: PathBuf,
    pub cni_path: Vec<PathBuf>,
}

impl Plugins {
    /// Our `bridge` and our `host-local` (both must be built: `cargo build --workspace --bins`;
    /// without ours, Debian's host-local would silently stand in and 1.1.0 tests would fail
    /// for the wrong reason).
    pub fn ours() -> Plugins {
        plugin("host-local");
        Plugins {
            bridge: plugin("bridge"),
            cni_path: vec![bin_dir(), PathBuf::from("/usr/lib/cni")],
        }
    }

    pub fn reference() -> Plugins {
        Plugins {
            bridge: netns_fixtures::reference_plugin("bridge")
                .expect("Debian's containernetworking-plugins (/usr/lib/cni/bridge) is required"),
            cni_path: vec![PathBuf::from("/usr/lib/cni")],
        }
    }
}

/// One test's host plus the plugins it runs.
pub struct Env {
    pub th: TestHost,
    pub p: Plugins,
}

impl Env {
    pub fn new() -> Env {
        Env::with(Plugins::ours())
    }

    pub fn with(p: Plugins) -> Env {
        Env {
            th: TestHost::new(),
            p,
        }
    }

    pub fn host(&self) -> &Netns {
        &self.th.host
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.th.ipam_dir()
    }

    /// A bridge config with host-local IPAM over `subnets`, plus `extra` keys.
    pub fn conf(&self, version: &str, subnets: &[&str], extra: Value) -> Value {
        let ranges: Vec<Value> = subnets.iter().map(|s| json!([{ "subnet": s }])).collect();
        let mut c = json!({
            "cniVersion": version,
            "name": NET,
            "type": "bridge",
            "ipam": {
                "type": "host-local",
                "dataDir": self.ipam_dir(),
                "ranges": ranges,
            },
        });
        merge(&mut c, extra);
        c
    }

    /// The usual gateway network: `isDefaultGateway` + `ipMasq`.
    pub fn gw_conf(&self, subnets: &[&str]) -> Value {
        self.conf(
            "1.0.0",
            subnets,
            json!({ "bridge": "tbr0", "isDefaultGateway": true, "ipMasq": true }),
        )
    }

    fn run(
        &self,
        cmd: &str,
        cid: &str,
        netns: Option<&Path>,
        ifname: &str,
        conf: &Value,
    ) -> CniOutput {
        let mut c = self
            .host()
            .cni(&self.p.bridge)
            .command(cmd)
            .container_id(cid)
            .ifname(ifname)
            .cni_path(&self.p.cni_path)
            .stdin(conf);
        if let Some(ns) = netns {
            c = c.netns(ns);
        }
        c.run()
    }

    pub fn add(&self, ctr: &Netns, cid: &str, conf: &Value) -> CniOutput {
        self.run("ADD", cid, Some(&ctr.path()), "eth0", conf)
    }

    pub fn add_if(&self, ctr: &Netns, cid: &str, ifname: &str, conf: &Value) -> CniOutput {
        self.run("ADD", cid, Some(&ctr.path()), ifname, conf)
    }

    /// DEL with the ADD result as prevResult (what libcni sends for configs >= 0.4.0).
    pub fn del(
        &self,
        ctr: Option<&Netns>,
        cid: &str,
        conf: &Value,
        prev: Option<&Value>,
    ) -> CniOutput {
        let mut conf = conf.clone();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        let path = ctr.map(|c| c.path());
        self.run("DEL", cid, path.as_deref(), "eth0", &conf)
    }

    pub fn del_path(&self, path: Option<&Path>, cid: &str, conf: &Value) -> CniOutput {
        self.run("DEL", cid, path, "eth0", conf)
    }

    pub fn check(&self, ctr: &Netns, cid: &str, conf: &Value, prev: &Value) -> CniOutput {
        self.check_if(ctr, cid, "eth0", conf, prev)
    }

    pub fn check_if(
        &self,
        ctr: &Netns,
        cid: &str,
        ifname: &str,
        conf: &Value,
        prev: &Value,
    ) -> CniOutput {
        let mut conf = conf.clone();
        conf["prevResult"] = prev.clone();
        self.run("CHECK", cid, Some(&ctr.path()), ifname, &conf)
    }

    /// GC with the given valid attachments (`(cid, ifname)`).
    pub fn gc(&self, conf: &Value, valid: &[(&str, &str)]) -> CniOutput {
        let mut conf = conf.clone();
        conf["cni.dev/valid-attachments"] = valid
            .iter()
            .map(|(c, i)| json!({ "containerID": c, "ifname": i }))
            .collect();
        self.host()
            .cni(&self.p.bridge)
            .command("GC")
            .cni_path(&self.p.cni_path)
            .stdin(conf)
            .run()
    }

    pub fn status(&self, conf: &Value) -> CniOutput {
        self.host()
            .cni(&self.p.bridge)
            .command("STATUS")
            .cni_path(&self.p.cni_path)
            .stdin(conf)
            .run()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.host().snapshot(&[&self.ipam_dir()])
    }

    pub fn link(&self, name: &str) -> Option<tether_netlink::Link> {
        self.host().netlink().link_by_name(name).unwrap()
    }
}

pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

/// The container's addresses from a result (1.0.0 shape).
pub use netns_fixtures::result_ips;

pub fn result_ip(r: &Value, v4: bool) -> IpAddr {
    *result_ips(r)
        .iter()
        .find(|i| i.is_ipv4() == v4)
        .expect("address of that family in the result")
}

/// The host veth's name from a result.
pub fn host_veth(r: &Value) -> String {
    r["interfaces"][1]["name"].as_str().unwrap().to_string()
}

/// Whether an iptables snapshot line belongs to a network's shared masquerade chain: the chain,
/// its rules, or the `POSTROUTING` jump to it. None of them names a container.
pub fn is_shared_masq(line: &str) -> bool {
    line.contains("TETHER-MASQ-")
}

/// After a network's last DEL: `before` and `after` must be equal but for host-local's `lock`
/// and `last_reserved_ip.*` files (the reference host-local keeps them too). No bridge we
/// created, no masquerade chain or jump, no lease may remain.
#[track_caller]
pub fn assert_nothing_left(before: &Snapshot, after: &Snapshot) {
    let mut after = after.clone();
    let mut before = before.clone();
    for s in [&mut before, &mut after] {
        s.files.retain(|k, _| {
            let f = k.rsplit('/').next().unwrap_or(k);
            f != "lock" && !f.starts_with("last_reserved_ip.")
        });
    }
    netns_fixtures::assert_snapshot_eq(&before, &after);
}

/// `before` and `after` must be equal once everything the bridge legitimately keeps is removed
/// from `after` while other attachments may still use them (or the reference ran): the bridge
/// link, its addresses and its connected routes, the network's shared masquerade chains
/// (`TETHER-MASQ-*`) with their `POSTROUTING` jumps, and host-local's `lock` and `last_reserved_ip.*` files (the reference host-local keeps them
/// too; no lease file may remain).
#[track_caller]
pub fn assert_clean(before: &Snapshot, after: &Snapshot, bridge: &str) {
    let mut after = after.clone();
    let mine =
        |l: &String| l.starts_with(&format!("{bridge} ")) || l.contains(&format!(" dev {bridge} "));
    after.links.retain(|l| !mine(l));
    after.addrs.retain(|l| !mine(l));
    after.routes.retain(|l| !mine(l));
    let mut before = before.clone();
    for s in [&mut before, &mut after] {
        s.iptables.retain(|l| !is_shared_masq(l));
        s.files.retain(|k, _| {
            let f = k.rsplit('/').next().unwrap_or(k);
            f != "lock" && !f.starts_with("last_reserved_ip.")
        });
    }
    netns_fixtures::assert_snapshot_eq(&before, &after);
}
