//! Calling plugins the way a runtime does: `CNI_*` in the environment, the network config (with
//! `runtimeConfig` and `prevResult` injected per plugin) on stdin, one exec per plugin, ADD through
//! the list in order and DEL in reverse with the cached result as `prevResult` (libcni's behaviour
//! for conflists at version 1.0.0).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns_fixtures::Netns;
use serde_json::{Value, json};

use crate::exec::{self, Outcome};

/// The CNI version both sides speak: Debian's reference plugins (1.1.1) stop at 1.0.0.
pub const CNI_VERSION: &str = "1.0.0";
pub const NETWORK: &str = "benchnet";
pub const BRIDGE: &str = "bench0";
/// Room for far more than 1000 containers.
pub const SUBNET: &str = "10.88.0.0/16";
pub const FIRST_HOST_PORT: usize = 20000;
pub const IFNAME: &str = "eth0";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One set of plugin binaries.
#[derive(Debug, Clone)]
pub struct Side {
    pub label: &'static str,
    pub dir: PathBuf,
    /// `TETHER_FIREWALL_BACKEND` for our plugins (the runtime's choice of backend).
    pub firewall: Option<&'static str>,
}

impl Side {
    pub fn binary(&self, plugin: &str) -> PathBuf {
        self.dir.join(plugin)
    }
}

pub fn container_id(i: usize) -> String {
    format!("bench-{i:05}")
}

pub fn host_port(i: usize) -> usize {
    FIRST_HOST_PORT + i
}

pub fn bridge_conf(data_dir: &Path) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "type": "bridge",
        "bridge": BRIDGE,
        "isGateway": true,
        "ipMasq": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": SUBNET }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": data_dir,
        },
    })
}

/// portmap as it appears in a conflist, after the runtime injected its capability arguments.
pub fn portmap_conf(i: usize) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "type": "portmap",
        "capabilities": { "portMappings": true },
        "runtimeConfig": {
            "portMappings": [
                { "hostPort": host_port(i), "containerPort": 80, "protocol": "tcp" },
            ],
        },
    })
}

fn with_prev(mut conf: Value, prev: Option<&Value>) -> Value {
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    conf
}

/// Where the plugins of one run execute.
pub struct Ctx<'a> {
    pub side: &'a Side,
    pub host: &'a Netns,
    pub data_dir: &'a Path,
    pub portmap: bool,
    /// `TETHER_LOG` for our plugins (profiling); the reference ignores it.
    pub log: Option<&'a str>,
    /// Run every plugin through the peak-memory wrapper, which writes here.
    pub peak_out: Option<&'a Path>,
}

/// One plugin exec inside a chain operation.
#[derive(Debug, Clone)]
pub struct Call {
    pub plugin: &'static str,
    pub command: &'static str,
    pub outcome: Outcome,
}

/// One ADD or DEL of the whole list for one container.
#[derive(Debug, Clone, Default)]
pub struct Op {
    pub calls: Vec<Call>,
    pub wall: Duration,
    /// The first failure, if any.
    pub error: Option<String>,
    /// ADD only: the final result, cached for DEL.
    pub result: Option<Value>,
}

impl Op {
    pub fn wall_ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3
    }

    /// Records one exec of the operation: the call when it ran, and the first failure. Says
    /// whether this exec succeeded.
    pub fn record(
        &mut self,
        plugin: &'static str,
        command: &'static str,
        ran: io::Result<Outcome>,
    ) -> bool {
        match ran {
            Ok(outcome) => {
                let ok = outcome.ok();
                if !ok {
                    self.error
                        .get_or_insert(format!("{plugin} {command} {}", outcome.failure()));
                }
                self.calls.push(Call {
                    plugin,
                    command,
                    outcome,
                });
                ok
            }
            Err(e) => {
                self.error
                    .get_or_insert(format!("{plugin} {command}: exec failed: {e}"));
                false
            }
        }
    }
}

impl Ctx<'_> {
    /// Execs `plugin` inside the host netns, `container` being `CNI_NETNS`.
    pub fn call(
        &self,
        plugin: &'static str,
        command: &'static str,
        i: usize,
        container: &Netns,
        conf: &Value,
    ) -> io::Result<Outcome> {
        let binary = self.side.binary(plugin);
        let mut cmd = match self.peak_out {
            None => self.host.command(&binary),
            Some(out) => {
                let mut c = self.host.command(std::env::current_exe()?);
                c.args(exec::wrap_args(out, &binary));
                c
            }
        };
        cmd.env_clear()
            .env("PATH", PATH)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id(i))
            .env("CNI_NETNS", container.path())
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", &self.side.dir);
        if let Some(b) = self.side.firewall {
            cmd.env("TETHER_FIREWALL_BACKEND", b);
        }
        if let Some(l) = self.log {
            cmd.env("TETHER_LOG", l);
        }
        let stdin = serde_json::to_vec(conf).expect("config serialises");
        match self.peak_out {
            None => exec::run(cmd, &stdin),
            Some(out) => exec::run_measured(cmd, &stdin, out),
        }
    }

    pub fn add(&self, i: usize, container: &Netns) -> Op {
        let start = Instant::now();
        let mut op = Op::default();
        let mut plan: Vec<(&'static str, Value)> = vec![("bridge", bridge_conf(self.data_dir))];
        if self.portmap {
            plan.push(("portmap", portmap_conf(i)));
        }
        let mut prev: Option<Value> = None;
        for (plugin, conf) in plan {
            let conf = with_prev(conf, prev.as_ref());
            if !op.record(plugin, "ADD", self.call(plugin, "ADD", i, container, &conf)) {
                break;
            }
            let stdout = &op.calls.last().expect("just recorded").outcome.stdout;
            match serde_json::from_slice::<Value>(stdout) {
                Ok(v) => prev = Some(v),
                Err(e) => {
                    op.error = Some(format!("{plugin} ADD printed no result: {e}"));
                    break;
                }
            }
        }
        op.result = if op.error.is_none() { prev } else { None };
        op.wall = start.elapsed();
        op
    }

    /// DEL in reverse order, every plugin even after a failure (as runtimes do, so that as much
    /// as possible is cleaned up), with the cached result as `prevResult` when ADD produced one.
    pub fn del(&self, i: usize, container: &Netns, cached: Option<&Value>) -> Op {
        let start = Instant::now();
        let mut op = Op::default();
        let mut plan: Vec<(&'static str, Value)> = Vec::new();
        if self.portmap {
            plan.push(("portmap", portmap_conf(i)));
        }
        plan.push(("bridge", bridge_conf(self.data_dir)));
        for (plugin, conf) in plan {
            let conf = with_prev(conf, cached);
            op.record(plugin, "DEL", self.call(plugin, "DEL", i, container, &conf));
        }
        op.wall = start.elapsed();
        op
    }
}

/// The container addresses in a result (without prefix length), for the leftover check.
pub fn result_ips(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip["address"].as_str())
                .filter_map(|a| a.split('/').next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
