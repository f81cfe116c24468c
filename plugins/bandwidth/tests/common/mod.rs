//! A throwaway "host" namespace with a container namespace, a plugin directory and a runtime
//! (`cni::runtime::Invoker`) that runs conflists from inside the host namespace.
//!
//! Chained plugins need something to create the interface: the bridge comes from Debian's
//! reference plugins (with host-local), so these tests depend only on the plugin under test.

#![allow(dead_code)]

use cni::runtime::{ConfList, Invoker, RuntimeConf};
use cni::{CniResult, Error};
use netns_fixtures::Netns;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const REFERENCE_DIR: &str = "/usr/lib/cni";

pub struct TestHost {
    pub host: Netns,
    pub ctr: Netns,
    pub dir: tempfile::TempDir,
}

impl TestHost {
    /// `ours` are (CNI type, binary) pairs; `bridge` and `host-local` come from the reference set.
    pub fn new(ours: &[(&str, &str)]) -> TestHost {
        let host = Netns::new().expect("cannot create a network namespace (run as root)");
        let ctr = Netns::new().expect("cannot create a network namespace (run as root)");
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for name in ["bridge", "host-local"] {
            let p = Path::new(REFERENCE_DIR).join(name);
            assert!(
                p.exists(),
                "{} is missing: install Debian's containernetworking-plugins",
                p.display()
            );
            std::os::unix::fs::symlink(&p, bin.join(name)).unwrap();
        }
        for (name, path) in ours {
            std::os::unix::fs::symlink(path, bin.join(name)).unwrap();
        }
        TestHost { host, ctr, dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn invoker(&self) -> Invoker {
        Invoker::new(vec![self.path("bin")], self.path("cache"))
    }

    /// The reference bridge with host-local on `subnet`, gateway on the bridge.
    pub fn bridge(&self, subnet: &str) -> Value {
        json!({
            "type": "bridge", "bridge": "tbr0", "isGateway": true,
            "ipam": {"type": "host-local", "subnet": subnet,
                     "dataDir": self.path("ipam").display().to_string()}
        })
    }

    pub fn list(&self, version: &str, name: &str, plugins: Vec<Value>) -> ConfList {
        let v = json!({"cniVersion": version, "name": name, "plugins": plugins});
        ConfList::from_bytes(v.to_string().as_bytes()).unwrap()
    }

    pub fn rt(&self, cid: &str) -> RuntimeConf {
        RuntimeConf {
            container_id: cid.into(),
            netns: self.ctr.path(),
            ifname: "eth0".into(),
            ..Default::default()
        }
    }

    pub fn add(&self, list: &ConfList, rt: &RuntimeConf) -> Result<CniResult, Error> {
        let inv = self.invoker();
        self.host.run(|| inv.add(list, rt))
    }

    pub fn del(&self, list: &ConfList, rt: &RuntimeConf) -> Result<(), Error> {
        let inv = self.invoker();
        self.host.run(|| inv.del(list, rt))
    }

    pub fn check(&self, list: &ConfList, rt: &RuntimeConf) -> Result<(), Error> {
        let inv = self.invoker();
        self.host.run(|| inv.check(list, rt))
    }

    /// Runs one plugin of the plugin dir directly, with the config a runtime derives for it
    /// (`cniVersion`, `name`, `prevResult`), from inside the host namespace.
    pub fn exec(
        &self,
        plugin: &Value,
        command: &str,
        version: &str,
        net: &str,
        rt: &RuntimeConf,
        prev: Option<&CniResult>,
    ) -> Result<Option<Value>, Error> {
        let mut conf = plugin.clone();
        conf["cniVersion"] = json!(version);
        conf["name"] = json!(net);
        if let Some(p) = prev {
            conf["prevResult"] = p.to_json(version);
        }
        let ty = plugin["type"].as_str().unwrap();
        let bin = self.path("bin").join(ty);
        let mut env = vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", rt.container_id.clone()),
            ("CNI_NETNS", rt.netns.display().to_string()),
            ("CNI_IFNAME", rt.ifname.clone()),
            ("CNI_PATH", self.path("bin").display().to_string()),
        ];
        let args: Vec<String> = rt.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !args.is_empty() {
            env.push(("CNI_ARGS", args.join(";")));
        }
        let stdin = conf.to_string();
        self.host
            .run(|| cni::invoke::exec_plugin(&bin, &env, stdin.as_bytes()))
    }
}

/// `ip -j ARGS` inside `ns`, parsed.
pub fn ip_json(ns: &Netns, args: &[&str]) -> Value {
    let out = ns.command("ip").arg("-j").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `ip ARGS` inside `ns`; panics on failure.
pub fn ip(ns: &Netns, args: &[&str]) {
    let out = ns.command("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sysctl as seen from inside `ns`.
pub fn sysctl(ns: &Netns, key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.run(|| std::fs::read_to_string(&path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim_end()
        .to_string()
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
