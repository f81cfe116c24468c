//! A container runtime on the fake host, for chained-plugin tests: a `CNI_PATH` of exactly the
//! binaries a test names, conflists run through `cni::runtime::Invoker` inside the host namespace
//! (as a runtime on that host runs them), and single plugins run with the config a runtime derives
//! for them.

use std::path::Path;

use cni::runtime::{ConfList, Invoker, RuntimeConf};
use cni::{Attachment, CniResult, Error};
use serde_json::{Value, json};

use crate::{Netns, TestHost};

/// A [`TestHost`] (it derefs to it, and through it to the host [`Netns`]) that runs CNI
/// conflists.
#[derive(Debug)]
pub struct CniHost {
    pub t: TestHost,
    pub invoker: Invoker,
    /// Plugins run where every iptables program fails ([`CniHost::without_iptables`]).
    hide_iptables: bool,
}

impl CniHost {
    /// A fresh [`TestHost`] whose `CNI_PATH` is `<dir>/cni-bin`, holding a symlink
    /// `type -> binary` per entry of `plugins`; the runtime's result cache is under
    /// [`TestHost::state_dir`]. Panics if a binary does not exist.
    #[track_caller]
    pub fn new(plugins: &[(&str, &Path)]) -> CniHost {
        let t = TestHost::new();
        let bin = t.dir().join("cni-bin");
        std::fs::create_dir(&bin).unwrap_or_else(|e| panic!("create {}: {e}", bin.display()));
        for (name, binary) in plugins {
            assert!(
                binary.is_file(),
                "plugin {name}: {} is missing",
                binary.display()
            );
            std::os::unix::fs::symlink(binary, bin.join(name))
                .unwrap_or_else(|e| panic!("link plugin {name}: {e}"));
        }
        let invoker = Invoker::new(vec![bin], t.state_dir().join("cache"));
        CniHost {
            t,
            invoker,
            hide_iptables: false,
        }
    }

    /// [`CniHost::new`] for a chained-plugin test: `plugins` plus our `bridge` and `host-local`
    /// from the target dir ([`crate::plugin`]), which [`CniHost::bridge_conf`] runs first.
    #[track_caller]
    pub fn chained(plugins: &[(&str, &Path)]) -> CniHost {
        let (bridge, ipam) = (crate::plugin("bridge"), crate::plugin("host-local"));
        let mut all = vec![("bridge", bridge.as_path()), ("host-local", ipam.as_path())];
        all.extend_from_slice(plugins);
        CniHost::new(&all)
    }

    /// This host as one without iptables: every plugin it runs from now on runs in a mount
    /// namespace where each iptables program fails ([`Netns::run_without_iptables`]); the test's
    /// own `iptables-save` still reads the real state.
    pub fn without_iptables(mut self) -> CniHost {
        self.hide_iptables = true;
        self
    }

    /// Runs `f` (which execs plugins) inside the host namespace, iptables hidden if asked.
    fn on_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        if self.hide_iptables {
            self.t.run_without_iptables(f)
        } else {
            self.t.run(f)
        }
    }

    /// The `CNI_PATH` directory.
    pub fn bin_dir(&self) -> &Path {
        &self.invoker.cni_path[0]
    }

    /// A `bridge` plugin config (bridge `tbr0`, gateway on it) with host-local IPAM on `subnet`
    /// storing its leases in [`TestHost::ipam_dir`]: the usual first plugin of a chained-plugin
    /// test's conflist.
    pub fn bridge_conf(&self, subnet: &str) -> Value {
        json!({
            "type": "bridge", "bridge": "tbr0", "isGateway": true,
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": self.t.ipam_dir()}
        })
    }

    /// ADD through the whole list, inside the host namespace.
    pub fn add(&self, list: &ConfList, rt: &RuntimeConf) -> Result<CniResult, Error> {
        self.on_host(|| self.invoker.add(list, rt))
    }

    /// DEL through the whole list (in reverse), inside the host namespace.
    pub fn del(&self, list: &ConfList, rt: &RuntimeConf) -> Result<(), Error> {
        self.on_host(|| self.invoker.del(list, rt))
    }

    /// CHECK through the whole list, inside the host namespace.
    pub fn check(&self, list: &ConfList, rt: &RuntimeConf) -> Result<(), Error> {
        self.on_host(|| self.invoker.check(list, rt))
    }

    /// GC through the whole list with these valid attachments, inside the host namespace.
    pub fn gc(&self, list: &ConfList, valid: &[Attachment]) -> Result<(), Error> {
        self.on_host(|| self.invoker.gc(list, valid))
    }

    /// Runs one plugin of `CNI_PATH` directly, inside the host namespace, with the config a
    /// runtime derives for it from a list of `version` called `network` (`cniVersion`, `name`,
    /// and `prev` as `prevResult` in that version's format): for the steps of a chain one at a
    /// time, or for a command with another `prevResult` than the runtime would send.
    pub fn exec(
        &self,
        plugin: &Value,
        command: &str,
        version: &str,
        network: &str,
        rt: &RuntimeConf,
        prev: Option<&CniResult>,
    ) -> Result<Option<Value>, Error> {
        let mut conf = plugin.clone();
        conf["cniVersion"] = json!(version);
        conf["name"] = json!(network);
        if let Some(p) = prev {
            conf["prevResult"] = p.to_json(version);
        }
        let ty = plugin["type"]
            .as_str()
            .expect("plugin config without a type");
        self.exec_binary(&self.bin_dir().join(ty), command, Some(rt), &conf)
    }

    /// Runs `binary` (any plugin, on `CNI_PATH` or not) inside the host namespace with `conf`
    /// on stdin as it is, `CNI_PATH` set to [`CniHost::bin_dir`], and the attachment's
    /// `CNI_CONTAINERID`/`CNI_NETNS`/`CNI_IFNAME` (and its `CNI_ARGS`) when `rt` is given: for
    /// commands without an attachment (GC, VERSION) and hand-made configs.
    pub fn exec_binary(
        &self,
        binary: &Path,
        command: &str,
        rt: Option<&RuntimeConf>,
        conf: &Value,
    ) -> Result<Option<Value>, Error> {
        // The invoker's CNI_PATH is [`CniHost::bin_dir`] alone.
        let env = self.invoker.env(command, rt);
        let stdin = conf.to_string();
        self.on_host(|| cni::invoke::exec_plugin(binary, &env, stdin.as_bytes()))
    }
}

impl std::ops::Deref for CniHost {
    type Target = TestHost;
    fn deref(&self) -> &TestHost {
        &self.t
    }
}

/// A conflist of `plugins`; panics if the runtime would refuse it.
#[track_caller]
pub fn conflist(version: &str, name: &str, plugins: Vec<Value>) -> ConfList {
    let v = json!({"cniVersion": version, "name": name, "plugins": plugins});
    ConfList::from_bytes(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("conflist {v}: {e}"))
}

impl Netns {
    /// This namespace as a container's attachment `ifname` (`CNI_NETNS` is [`Netns::path`]).
    pub fn attachment(&self, container_id: &str, ifname: &str) -> RuntimeConf {
        RuntimeConf {
            container_id: container_id.into(),
            netns: self.path(),
            ifname: ifname.into(),
            ..Default::default()
        }
    }
}
