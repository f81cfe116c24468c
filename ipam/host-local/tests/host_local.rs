//! The real `host-local` binary driven through the CNI protocol (env + stdin), side by side with
//! Debian's reference `/usr/lib/cni/host-local` where compatibility is the point.
//!
//! IPAM never enters `CNI_NETNS`, but ADD and CHECK require it to be a network namespace: every
//! test passes a throwaway one of its own, never the host's.

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const OURS: &str = env!("CARGO_BIN_EXE_host-local");
const REFERENCE: &str = "/usr/lib/cni/host-local";
/// The newest version the reference (1.1.1) speaks.
const REF_VERSION: &str = "1.0.0";

fn reference() -> &'static str {
    assert!(
        Path::new(REFERENCE).is_file(),
        "{REFERENCE} is missing: install Debian's containernetworking-plugins (see .ci/run)"
    );
    REFERENCE
}

/// One test's world: a netns for `CNI_NETNS` and a temp dir for `dataDir` (and resolv.conf).
struct World {
    ns: File,
    dir: tempfile::TempDir,
}

/// A fresh, empty network namespace held by an fd (freed when the test ends). host-local never
/// enters it; it only has to be a namespace, and not the host's. Made here rather than with
/// `netns-fixtures` so this crate's tests need nothing but `nix`.
fn private_netns() -> File {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET) failed: run the tests as root");
        File::open("/proc/thread-self/ns/net").unwrap()
    })
    .join()
    .unwrap()
}

#[derive(Debug)]
struct Out {
    ok: bool,
    json: Value,
    stderr: String,
}

impl Out {
    fn ok(self) -> Value {
        assert!(
            self.ok,
            "expected success, got {} / {}",
            self.json, self.stderr
        );
        self.json
    }
    fn err(self, code: u64) -> String {
        assert!(
            !self.ok,
            "expected error {code}, got success: {}",
            self.json
        );
        assert_eq!(self.json["code"], code, "{}", self.json);
        self.json["msg"].as_str().unwrap().to_string()
    }
    fn empty_ok(self) {
        assert!(
            self.ok,
            "expected success, got {} / {}",
            self.json, self.stderr
        );
        assert_eq!(self.json, Value::Null, "DEL/CHECK/STATUS/GC print nothing");
    }
}

/// One invocation: command, container id, ifname, optional CNI_ARGS, config.
struct Call<'a> {
    bin: &'a str,
    cmd: &'a str,
    id: &'a str,
    ifname: &'a str,
    args: Option<&'a str>,
}

impl World {
    fn new() -> World {
        World {
            ns: private_netns(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// The lease directory of network `name`.
    fn net_dir(&self, name: &str) -> PathBuf {
        self.data_dir().join(name)
    }

    /// A delegated-IPAM config (the whole upper config, as bridge passes it).
    fn conf(&self, version: &str, name: &str, ipam: Value) -> Value {
        let mut ipam = ipam;
        ipam["type"] = json!("host-local");
        ipam["dataDir"] = json!(self.data_dir());
        json!({"cniVersion": version, "name": name, "type": "bridge", "ipam": ipam})
    }

    fn spawn(&self, c: &Call, conf: &Value) -> Child {
        let mut cmd = Command::new(c.bin);
        cmd.env_clear()
            .env("CNI_COMMAND", c.cmd)
            .env("CNI_CONTAINERID", c.id)
            .env(
                "CNI_NETNS",
                format!("/proc/{}/fd/{}", std::process::id(), self.ns.as_raw_fd()),
            )
            .env("CNI_IFNAME", c.ifname)
            .env("CNI_PATH", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(a) = c.args {
            cmd.env("CNI_ARGS", a);
        }
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        child
    }

    fn call(&self, c: &Call, conf: &Value) -> Out {
        finish(self.spawn(c, conf))
    }

    fn ours(&self, cmd: &str, id: &str, conf: &Value) -> Out {
        self.call(&call(OURS, cmd, id), conf)
    }

    fn refr(&self, cmd: &str, id: &str, conf: &Value) -> Out {
        self.call(&call(reference(), cmd, id), conf)
    }

    /// Lease file names (addresses) of network `name`.
    fn leases(&self, name: &str) -> BTreeSet<String> {
        match std::fs::read_dir(self.net_dir(name)) {
            Err(_) => BTreeSet::new(),
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect(),
        }
    }

    fn lease_content(&self, name: &str, ip: &str) -> String {
        std::fs::read_to_string(self.net_dir(name).join(ip)).unwrap()
    }
}

fn call<'a>(bin: &'a str, cmd: &'a str, id: &'a str) -> Call<'a> {
    Call {
        bin,
        cmd,
        id,
        ifname: "eth0",
        args: None,
    }
}

fn finish(child: Child) -> Out {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    Out {
        ok: out.status.success(),
        json: if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON {stdout:?}: {e}"))
        },
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn addrs(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn dual_stack() -> Value {
    json!({
        "ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00:9::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:9::1"}],
    })
}

/// Every spec version: ADD prints exactly what the reference prints (for the versions it speaks),
/// in the right shape; CHECK, STATUS and GC where the version allows them; DEL frees everything.
#[test]
fn result_shape_in_every_version() {
    let w = World::new();
    let resolv = w.dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.0.0.53\nsearch a.example b.example\noptions ndots:2\ndomain d.example\n",
    )
    .unwrap();
    for v in cni::version::ALL {
        let mut ipam = dual_stack();
        ipam["resolvConf"] = json!(resolv);
        let conf = w.conf(v, &format!("net-{v}"), ipam.clone());
        let r = w.ours("ADD", "c1", &conf).ok();
        assert_eq!(r["cniVersion"], *v);
        assert!(r.get("interfaces").is_none(), "{v}: {r}");
        assert_eq!(r["dns"]["nameservers"], json!(["10.0.0.53"]), "{v}");
        assert_eq!(r["dns"]["search"], json!(["a.example", "b.example"]), "{v}");
        assert_eq!(r["dns"]["domain"], "d.example", "{v}");
        assert_eq!(r["dns"]["options"], json!(["ndots:2"]), "{v}");
        if cni::version::at_least(v, "0.3.0") {
            assert_eq!(addrs(&r), ["10.9.0.2/24", "fd00:9::2/64"], "{v}");
            assert_eq!(r["ips"][0]["gateway"], "10.9.0.1");
            assert_eq!(r["ips"][1]["gateway"], "fd00:9::1");
            assert!(r["ips"][0].get("interface").is_none());
            let has_version = r["ips"][0].get("version").is_some();
            assert_eq!(has_version, !cni::version::at_least(v, "1.0.0"), "{v}: {r}");
            assert_eq!(
                r["routes"],
                json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:9::1"}])
            );
        } else {
            assert_eq!(r["ip4"]["ip"], "10.9.0.2/24", "{v}: {r}");
            assert_eq!(r["ip4"]["gateway"], "10.9.0.1");
            assert_eq!(r["ip4"]["routes"], json!([{"dst": "0.0.0.0/0"}]));
            assert_eq!(r["ip6"]["ip"], "fd00:9::2/64");
            assert_eq!(
                r["ip6"]["routes"],
                json!([{"dst": "::/0", "gw": "fd00:9::1"}])
            );
        }
        // Byte-for-byte the reference's answer (as JSON values), in a data dir of its own.
        if cni::version::at_least(REF_VERSION, v) {
            let mut ref_ipam = ipam.clone();
            ref_ipam["dataDir"] = json!(w.dir.path().join("ref"));
            let mut ref_conf = conf.clone();
            ref_conf["ipam"] = ref_ipam;
            ref_conf["ipam"]["type"] = json!("host-local");
            assert_eq!(w.refr("ADD", "c1", &ref_conf).ok(), r, "{v}");
        }
        if cni::version::at_least(v, "0.4.0") {
            let mut with_prev = conf.clone();
            with_prev["prevResult"] = r.clone();
            w.ours("CHECK", "c1", &with_prev).empty_ok();
            w.ours("CHECK", "c1", &conf).empty_ok();
            w.ours("CHECK", "c2", &conf).err(999);
        } else {
            w.ours("CHECK", "c1", &conf).err(1);
        }
        if cni::version::at_least(v, "1.1.0") {
            w.ours("STATUS", "", &conf).empty_ok();
            let mut gc = conf.clone();
            gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
            w.ours("GC", "", &gc).empty_ok();
            assert_eq!(
                w.leases(&format!("net-{v}")).len(),
                2,
                "GC kept the valid lease"
            );
        }
        w.ours("DEL", "c1", &conf).empty_ok();
        assert!(w.leases(&format!("net-{v}")).is_empty(), "{v}");
    }
}

#[test]
fn v4_v6_dual_and_legacy_keys() {
    let w = World::new();
    let v4 = w.conf("1.1.0", "v4", json!({"ranges": [[{"subnet": "10.1.0.0/16", "rangeStart": "10.1.5.10", "rangeEnd": "10.1.5.20", "gateway": "10.1.0.1"}]]}));
    assert_eq!(addrs(&w.ours("ADD", "a", &v4).ok()), ["10.1.5.10/16"]);
    assert_eq!(addrs(&w.ours("ADD", "b", &v4).ok()), ["10.1.5.11/16"]);
    let v6 = w.conf(
        "1.1.0",
        "v6",
        json!({"ranges": [[{"subnet": "fd00:1::/64"}]]}),
    );
    let r = w.ours("ADD", "a", &v6).ok();
    assert_eq!(addrs(&r), ["fd00:1::2/64"]);
    assert_eq!(r["ips"][0]["gateway"], "fd00:1::1");
    let dual = w.conf("1.1.0", "dual", dual_stack());
    assert_eq!(
        addrs(&w.ours("ADD", "a", &dual).ok()),
        ["10.9.0.2/24", "fd00:9::2/64"]
    );
    // The legacy keys directly under ipam form the first range set, before `ranges`.
    let legacy = w.conf(
        "1.1.0",
        "legacy",
        json!({"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.100", "gateway": "10.2.0.254",
               "ranges": [[{"subnet": "fd00:2::/120"}]]}),
    );
    let r = w.ours("ADD", "a", &legacy).ok();
    assert_eq!(addrs(&r), ["10.2.0.100/24", "fd00:2::2/120"]);
    assert_eq!(r["ips"][0]["gateway"], "10.2.0.254");
    // A range set with two ranges moves on to the second when the first is full.
    let multi = w.conf(
        "1.1.0",
        "multi",
        json!({"ranges": [[{"subnet": "10.3.0.0/30"}, {"subnet": "10.3.1.0/30"}]]}),
    );
    assert_eq!(addrs(&w.ours("ADD", "a", &multi).ok()), ["10.3.0.2/30"]);
    assert_eq!(addrs(&w.ours("ADD", "b", &multi).ok()), ["10.3.1.2/30"]);
    w.ours("ADD", "c", &multi).err(50);
}

#[test]
fn exhaustion_fails_add_and_status() {
    let w = World::new();
    // A /29 hands out .2 to .6 (.1 is the gateway, .7 the broadcast).
    let conf = w.conf("1.1.0", "small", json!({"subnet": "10.4.0.0/29"}));
    let mut got = BTreeSet::new();
    for i in 0..5 {
        got.extend(addrs(&w.ours("ADD", &format!("c{i}"), &conf).ok()));
    }
    assert_eq!(got.len(), 5);
    w.ours("STATUS", "", &conf).err(50);
    let msg = w.ours("ADD", "c5", &conf).err(50);
    assert!(
        msg.contains("no IP addresses available in range set 10.4.0.1-10.4.0.6"),
        "{msg}"
    );
    let status_msg = w.ours("STATUS", "", &conf).err(50);
    assert!(status_msg.contains("no free address"), "{status_msg}");
    w.ours("DEL", "c3", &conf).empty_ok();
    w.ours("STATUS", "", &conf).empty_ok();
    assert_eq!(addrs(&w.ours("ADD", "c5", &conf).ok()).len(), 1);
    // STATUS on a network nobody used yet is fine and creates nothing.
    let fresh = w.conf("1.1.0", "fresh", json!({"subnet": "10.5.0.0/30"}));
    w.ours("STATUS", "", &fresh).empty_ok();
    assert!(!w.net_dir("fresh").exists());
}

#[test]
fn requested_ips_from_every_source() {
    let w = World::new();
    let conf = w.conf("1.1.0", "req", dual_stack());
    let with_args = |id: &str, args: &str| {
        w.call(
            &Call {
                args: Some(args),
                ..call(OURS, "ADD", id)
            },
            &conf,
        )
    };
    let r = with_args("a", "IgnoreUnknown=1;IP=10.9.0.50,fd00:9::50").ok();
    assert_eq!(addrs(&r), ["10.9.0.50/24", "fd00:9::50/64"]);
    let mut c = conf.clone();
    c["args"] = json!({"cni": {"ips": ["10.9.0.51"]}});
    // The v6 address comes from the round-robin cursor, which the requested ::50 moved.
    assert_eq!(
        addrs(&w.ours("ADD", "b", &c).ok()),
        ["10.9.0.51/24", "fd00:9::51/64"]
    );
    let mut c = conf.clone();
    c["capabilities"] = json!({"ips": true});
    c["runtimeConfig"] = json!({"ips": ["fd00:9::52/64", "10.9.0.52/24"]});
    assert_eq!(
        addrs(&w.ours("ADD", "c", &c).ok()),
        ["10.9.0.52/24", "fd00:9::52/64"]
    );

    // Taken, gateway, outside every range, garbage: clear errors, nothing leaked.
    let before = w.leases("req");
    let msg = with_args("d", "IP=10.9.0.50").err(999);
    assert!(
        msg.contains("10.9.0.50 is not available") && msg.contains("container a"),
        "{msg}"
    );
    let msg = with_args("d", "IP=10.9.0.1").err(999);
    assert!(msg.contains("gateway"), "{msg}");
    let msg = with_args("d", "IP=192.168.7.7").err(999);
    assert!(
        msg.contains("192.168.7.7") && msg.contains("not inside any range"),
        "{msg}"
    );
    let msg = with_args("d", "IP=banana").err(4);
    assert!(msg.contains("CNI_ARGS IP"), "{msg}");
    let mut c = conf.clone();
    c["runtimeConfig"] = json!({"ips": ["10.9.0.300"]});
    w.ours("ADD", "d", &c).err(7);
    assert_eq!(w.leases("req"), before);
}

#[test]
fn ip_ranges_capability() {
    let w = World::new();
    let mut conf = w.conf("1.1.0", "caps", json!({}));
    conf["capabilities"] = json!({"ipRanges": true});
    conf["runtimeConfig"] =
        json!({"ipRanges": [[{"subnet": "10.6.0.0/24", "rangeStart": "10.6.0.40"}]]});
    assert_eq!(addrs(&w.ours("ADD", "a", &conf).ok()), ["10.6.0.40/24"]);
    w.ours("DEL", "a", &conf).empty_ok();
    // As in the reference, the capability's sets come before the configured ones.
    conf["ipam"]["ranges"] = json!([[{"subnet": "fd00:6::/64"}]]);
    assert_eq!(
        addrs(&w.ours("ADD", "b", &conf).ok()),
        ["10.6.0.41/24", "fd00:6::2/64"]
    );
}

#[test]
fn repeated_add_del_twice_and_unknown() {
    let w = World::new();
    let conf = w.conf("1.1.0", "idem", dual_stack());
    let first = w.ours("ADD", "c1", &conf).ok();
    assert_eq!(
        w.ours("ADD", "c1", &conf).ok(),
        first,
        "a repeated ADD returns the same lease"
    );
    assert_eq!(w.leases("idem").len(), 2, "and takes nothing more");
    // Another interface of the same container is another attachment.
    let eth1 = w
        .call(
            &Call {
                ifname: "eth1",
                ..call(OURS, "ADD", "c1")
            },
            &conf,
        )
        .ok();
    assert_eq!(addrs(&eth1), ["10.9.0.3/24", "fd00:9::3/64"]);
    assert_eq!(w.lease_content("idem", "10.9.0.3"), "c1\r\neth1");
    w.ours("DEL", "c1", &conf).empty_ok();
    w.ours("DEL", "c1", &conf).empty_ok();
    assert_eq!(w.leases("idem"), set(&["10.9.0.3", "fd00:9::3"]));
    w.ours("DEL", "never-added", &conf).empty_ok();
    // No data dir at all, and a config whose ranges are broken: DEL still succeeds.
    let gone = w.conf("1.1.0", "never-used", json!({"subnet": "10.7.0.0/24"}));
    w.ours("DEL", "c1", &gone).empty_ok();
    assert!(!w.net_dir("never-used").exists());
    let mut broken = conf.clone();
    broken["ipam"]["ranges"] = json!([[{"subnet": "10.9.0.5/24"}]]);
    w.call(
        &Call {
            ifname: "eth1",
            ..call(OURS, "DEL", "c1")
        },
        &broken,
    )
    .empty_ok();
    assert!(w.leases("idem").is_empty());
}

#[test]
fn gc_releases_what_is_not_valid() {
    let w = World::new();
    let conf = w.conf("1.1.0", "gc", json!({"subnet": "10.8.0.0/24"}));
    for id in ["a", "b", "c"] {
        w.ours("ADD", id, &conf).ok();
    }
    w.call(
        &Call {
            ifname: "eth1",
            ..call(OURS, "ADD", "a")
        },
        &conf,
    )
    .ok();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": "a", "ifname": "eth0"}, {"containerID": "c", "ifname": "eth0"}]);
    w.ours("GC", "", &gc).empty_ok();
    assert_eq!(w.leases("gc"), set(&["10.8.0.2", "10.8.0.4"]));
    assert_eq!(w.lease_content("gc", "10.8.0.2"), "a\r\neth0");
    // The older key works too; without any key nothing is known to be stale.
    let mut gc = conf.clone();
    gc["cni.dev/attachments"] = json!([{"containerID": "c", "ifname": "eth0"}]);
    w.ours("GC", "", &conf).empty_ok();
    assert_eq!(w.leases("gc").len(), 2);
    w.ours("GC", "", &gc).empty_ok();
    assert_eq!(w.leases("gc"), set(&["10.8.0.4"]));
}

#[test]
fn bad_configs_fail_with_code_7_and_touch_nothing() {
    let w = World::new();
    for (ipam, needle) in [
        (json!({"subnet": "10.10.0.5/24"}), "host bits set"),
        (json!({"subnet": "10.10.0.5/32"}), "too small"),
        (json!({"subnet": "10.10.0.0/31"}), "too small"),
        (json!({"subnet": "fd00::/127"}), "too small"),
        (
            json!({"ranges": [[{"subnet": "10.10.0.0/24", "rangeStart": "10.11.0.1"}]]}),
            "not inside subnet",
        ),
        (
            json!({"ranges": [[{"subnet": "10.10.0.0/24"}, {"subnet": "fd00::/64"}]]}),
            "mixed address families",
        ),
        (
            json!({"ranges": [[{"subnet": "10.10.0.0/24"}], [{"subnet": "10.10.0.0/25"}]]}),
            "overlaps",
        ),
        (
            json!({"ranges": [[{"subnet": "10.10.0.0/24", "rangeStart": "10.10.0.1", "rangeEnd": "10.10.0.1"}]]}),
            "no usable address",
        ),
        (json!({}), "no IP ranges"),
        (json!({"subnet": "nonsense"}), "not a CIDR"),
        // The reference takes these and hands out 10.67.0.23/0 with gateway 0.0.0.1.
        (json!({"subnet": "0.0.0.0/0"}), "covers every address"),
        (json!({"subnet": "::/0"}), "covers every address"),
        (
            json!({"subnet": "10.10.0.0/24", "gateway": "10.10.0.0"}),
            "is the network address",
        ),
        (
            json!({"subnet": "10.10.0.0/24", "gateway": "10.10.0.255"}),
            "is the broadcast address",
        ),
        (
            json!({"ranges": [[{"subnet": "fd00::/64", "gateway": "fd00::"}]]}),
            "is the network address",
        ),
        (
            json!({"ranges": [[{"subnet": "10.10.0.0/24", "rangeStart": "10.10.0.0"}]]}),
            "is the network address",
        ),
        (
            json!({"ranges": [[{"subnet": "10.10.0.0/24", "rangeEnd": "10.10.0.255"}]]}),
            "is the broadcast address",
        ),
        (
            json!({"subnet": "10.10.0.0/24", "gateway": "10.11.0.1"}),
            "not inside subnet",
        ),
    ] {
        let conf = w.conf("1.1.0", "bad", ipam.clone());
        let msg = w.ours("ADD", "c1", &conf).err(7);
        assert!(msg.contains(needle), "{ipam}: {msg}");
        w.ours("STATUS", "", &conf).err(7);
    }
    let mut no_ipam = w.conf("1.1.0", "bad", json!({}));
    no_ipam.as_object_mut().unwrap().remove("ipam");
    assert!(w.ours("ADD", "c1", &no_ipam).err(7).contains("ipam"));
    let mut missing_resolv = w.conf("1.1.0", "bad", json!({"subnet": "10.10.0.0/24"}));
    missing_resolv["ipam"]["resolvConf"] = json!("/nonexistent/resolv.conf");
    assert!(
        w.ours("ADD", "c1", &missing_resolv)
            .err(7)
            .contains("resolvConf")
    );
    assert!(!w.data_dir().exists(), "a rejected ADD creates nothing");
}

#[test]
fn check_against_prev_result() {
    let w = World::new();
    let conf = w.conf("1.0.0", "chk", dual_stack());
    let r = w.ours("ADD", "c1", &conf).ok();
    let mut c = conf.clone();
    c["prevResult"] = r.clone();
    w.ours("CHECK", "c1", &c).empty_ok();
    c["prevResult"]["ips"][0]["address"] = json!("10.9.0.77/24");
    let msg = w.ours("CHECK", "c1", &c).err(999);
    assert!(msg.contains("10.9.0.77 is not leased"), "{msg}");
    std::fs::remove_file(w.net_dir("chk").join("fd00:9::2")).unwrap();
    let msg = w.ours("CHECK", "c1", &conf).err(999);
    assert!(msg.contains("range set 1"), "{msg}");
}

/// 100 processes ADD at once: 100 distinct addresses, no errors; then 100 parallel DELs leave
/// only the bookkeeping files.
#[test]
fn hundred_parallel_adds() {
    let w = World::new();
    let conf = w.conf("1.1.0", "par", json!({"subnet": "10.20.0.0/24"}));
    let ids: Vec<String> = (0..100).map(|i| format!("ctr{i}")).collect();
    let children: Vec<Child> = ids
        .iter()
        .map(|id| w.spawn(&call(OURS, "ADD", id), &conf))
        .collect();
    let mut seen = BTreeSet::new();
    for (id, child) in ids.iter().zip(children) {
        let r = finish(child).ok();
        let a = addrs(&r);
        assert_eq!(a.len(), 1);
        assert!(seen.insert(a[0].clone()), "{} handed out twice", a[0]);
        let ip = a[0].split('/').next().unwrap();
        assert_eq!(w.lease_content("par", ip), format!("{id}\r\neth0"));
    }
    assert_eq!(seen.len(), 100);
    assert_eq!(w.leases("par").len(), 100);
    let children: Vec<Child> = ids
        .iter()
        .map(|id| w.spawn(&call(OURS, "DEL", id), &conf))
        .collect();
    for c in children {
        finish(c).empty_ok();
    }
    let left: BTreeSet<String> = std::fs::read_dir(w.net_dir("par"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, set(&["last_reserved_ip.0", "lock"]));
}

/// One data dir, both implementations: each honours the other's leases, cursor and lock.
#[test]
fn disk_compatible_with_the_reference() {
    let w = World::new();
    let conf = w.conf(REF_VERSION, "shared", dual_stack());
    let r = w.refr("ADD", "ref1", &conf).ok();
    assert_eq!(addrs(&r), ["10.9.0.2/24", "fd00:9::2/64"]);
    // Ours continues after the reference's cursor and skips its lease.
    let o = w.ours("ADD", "ours1", &conf).ok();
    assert_eq!(addrs(&o), ["10.9.0.3/24", "fd00:9::3/64"]);
    // Identical files from both.
    assert_eq!(w.lease_content("shared", "10.9.0.2"), "ref1\r\neth0");
    assert_eq!(w.lease_content("shared", "fd00:9::3"), "ours1\r\neth0");
    for f in ["last_reserved_ip.0", "last_reserved_ip.1"] {
        let text = std::fs::read_to_string(w.net_dir("shared").join(f)).unwrap();
        assert!(
            ["10.9.0.3", "fd00:9::3"].contains(&text.as_str()),
            "{f}: {text:?}"
        );
    }
    // Ours recognises the reference's lease as that container's (a repeated ADD)...
    assert_eq!(w.ours("ADD", "ref1", &conf).ok(), r);
    // ...and the reference recognises ours (it refuses a duplicate).
    let msg = w.refr("ADD", "ours1", &conf).err(999);
    assert!(msg.contains("duplicate allocation"), "{msg}");
    // The reference continues after our cursor.
    assert_eq!(
        addrs(&w.refr("ADD", "ref2", &conf).ok()),
        ["10.9.0.4/24", "fd00:9::4/64"]
    );
    // DEL across implementations.
    w.ours("DEL", "ref1", &conf).empty_ok();
    w.refr("DEL", "ours1", &conf).empty_ok();
    assert_eq!(w.leases("shared"), set(&["10.9.0.4", "fd00:9::4"]));
    // Legacy (id-only) files, as host-local wrote them before it recorded the interface.
    std::fs::write(w.net_dir("shared").join("10.9.0.9"), "old\n").unwrap();
    let mut one = conf.clone();
    one["ipam"]["ranges"] = json!([[{"subnet": "10.9.0.0/24"}]]);
    assert_eq!(addrs(&w.ours("ADD", "old", &one).ok()), ["10.9.0.9/24"]);
    w.ours("DEL", "old", &one).empty_ok();
    assert!(!w.leases("shared").contains("10.9.0.9"));
    // The reference's file names for IPv6 are ours: it takes a requested address whose
    // spelling has two equal zero runs, and our listing and DEL find it.
    let tricky = "2001:db8::1:0:0:1";
    let v6 = w.conf(
        REF_VERSION,
        "names",
        json!({"ranges": [[{"subnet": "2001:db8::/64"}]]}),
    );
    let r = w
        .call(
            &Call {
                args: Some("IP=2001:db8:0:0:1:0:0:1"),
                ..call(reference(), "ADD", "n1")
            },
            &v6,
        )
        .ok();
    assert_eq!(addrs(&r), [format!("{tricky}/64")]);
    assert_eq!(w.leases("names"), set(&[tricky]));
    let msg = w
        .call(
            &Call {
                args: Some("IP=2001:db8:0:0:1:0:0:1"),
                ..call(OURS, "ADD", "n2")
            },
            &v6,
        )
        .err(999);
    assert!(msg.contains("not available"), "{msg}");
    w.ours("DEL", "n1", &v6).empty_ok();
    assert!(w.leases("names").is_empty());
}

/// Both implementations hammering one directory at once: the shared `lock` keeps every address
/// unique.
#[test]
fn parallel_adds_mixed_with_the_reference() {
    let w = World::new();
    let conf = w.conf(REF_VERSION, "mixed", json!({"subnet": "10.21.0.0/24"}));
    let ids: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    let children: Vec<Child> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let bin = if i % 2 == 0 { OURS } else { reference() };
            w.spawn(&call(bin, "ADD", id), &conf)
        })
        .collect();
    let mut seen = BTreeSet::new();
    for c in children {
        let a = addrs(&finish(c).ok());
        assert!(seen.insert(a[0].clone()), "{} handed out twice", a[0]);
    }
    assert_eq!(w.leases("mixed").len(), 40);
}

/// Every command waits for the `lock` file the reference locks, so neither implementation can
/// interleave with the other.
#[test]
fn operations_wait_for_the_shared_lock() {
    use nix::fcntl::{Flock, FlockArg};
    use std::time::Duration;
    let w = World::new();
    let conf = w.conf("1.1.0", "locked", json!({"subnet": "10.22.0.0/24"}));
    w.ours("ADD", "first", &conf).ok();
    let lock = std::fs::File::open(w.net_dir("locked").join("lock")).unwrap();
    let held = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    for cmd in ["ADD", "DEL", "STATUS"] {
        let mut child = w.spawn(&call(OURS, cmd, "second"), &conf);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            child.try_wait().unwrap().is_none(),
            "{cmd} did not wait for the lock"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
    drop(held);
    w.ours("ADD", "second", &conf).ok();
}

/// Runs one call and counts its read(2)s: `/proc/<pid>/io` still answers for the zombie, so it is
/// read before the child is reaped.
fn counted_reads(mut child: Child) -> (Out, u64) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    use std::io::Read;
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).unwrap();
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let syscr = io
        .lines()
        .find_map(|l| l.strip_prefix("syscr: "))
        .unwrap()
        .parse()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let ok = child.wait().unwrap().success();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap()
    };
    (Out { ok, json, stderr }, syscr)
}

/// ADD and DEL do not read every lease (the reference reads each lease file on both): their
/// read(2) count is the same with 10 leases as with 400. Only the first operation after leases
/// appeared behind our back reads them all, once, to rebuild the index.
#[test]
fn add_and_del_do_not_read_every_lease() {
    let w = World::new();
    let reads = |n: u32| -> (u64, u64, u64, u64) {
        let name = format!("grow{n}");
        let conf = w.conf("1.1.0", &name, json!({"subnet": "10.30.0.0/16"}));
        std::fs::create_dir_all(w.net_dir(&name)).unwrap();
        let base = u32::from(std::net::Ipv4Addr::new(10, 30, 1, 0));
        for i in 0..n {
            let ip = std::net::Ipv4Addr::from(base + i);
            std::fs::write(
                w.net_dir(&name).join(ip.to_string()),
                format!("pre{i}\r\neth0"),
            )
            .unwrap();
        }
        let run = |cmd: &str, id: &str| {
            let (out, reads) = counted_reads(w.spawn(&call(OURS, cmd, id), &conf));
            assert!(out.ok, "{cmd} {id}: {} {}", out.json, out.stderr);
            reads
        };
        let rebuild = run("ADD", "first");
        let add = run("ADD", "m1");
        let readd = run("ADD", "m1");
        let del = run("DEL", "m1");
        assert_eq!(w.leases(&name).len(), n as usize + 1);
        (rebuild, add, readd, del)
    };
    let small = reads(10);
    eprintln!("read(2)s with 10 leases (rebuild, ADD, re-ADD, DEL): {small:?}");
    let large = reads(400);
    eprintln!("read(2)s with 400 leases: {large:?}");
    assert!(
        large.0 >= small.0 + 390,
        "the rebuild reads each lease once: {small:?} vs {large:?}"
    );
    // A little slack for how stdin happens to arrive.
    assert!(large.1 <= small.1 + 2, "ADD: {small:?} vs {large:?}");
    assert!(
        large.2 <= small.2 + 2,
        "repeated ADD: {small:?} vs {large:?}"
    );
    assert!(large.3 <= small.3 + 2, "DEL: {small:?} vs {large:?}");
}

/// Our index (`<network>/.tether`) beside the reference's files: the reference neither takes an
/// index file for a lease nor minds it, our next operation after the reference's catches up
/// with it, and the index is gone once the network has no containers.
#[test]
fn index_beside_the_reference() {
    let w = World::new();
    let conf = w.conf(REF_VERSION, "ix", json!({"subnet": "10.23.0.0/24"}));
    let index = || -> BTreeSet<String> {
        match std::fs::read_dir(w.net_dir("ix").join(".tether")) {
            Err(_) => BTreeSet::new(),
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect(),
        }
    };
    w.refr("ADD", "r1", &conf).ok();
    assert!(index().is_empty());
    assert_eq!(addrs(&w.ours("ADD", "c1", &conf).ok()), ["10.23.0.3/24"]);
    assert_eq!(index(), set(&["c1@eth0", "r1@eth0"]));
    // A repeated ADD of the reference's container right after the reference's ADD (no index
    // entry yet) returns the reference's lease.
    let r2 = w.refr("ADD", "r2", &conf).ok();
    assert_eq!(w.ours("ADD", "r2", &conf).ok(), r2);
    // The reference reads the files under `.tether` too when it looks for c1's leases: it
    // removes only the lease, and our stale entry is dropped at our next operation, which
    // does not hand c1 its released address back as if it still held it.
    w.refr("DEL", "c1", &conf).empty_ok();
    assert!(index().contains("c1@eth0"));
    assert!(!w.leases("ix").contains("10.23.0.3"));
    assert_eq!(addrs(&w.ours("ADD", "c1", &conf).ok()), ["10.23.0.5/24"]);
    assert_eq!(index(), set(&["c1@eth0", "r1@eth0", "r2@eth0"]));
    // The reference's duplicate check still sees our leases through all of this.
    let msg = w.refr("ADD", "c1", &conf).err(999);
    assert!(msg.contains("duplicate allocation"), "{msg}");
    w.refr("DEL", "r1", &conf).empty_ok();
    w.ours("DEL", "r2", &conf).empty_ok();
    assert_eq!(index(), set(&["c1@eth0"]));
    w.ours("DEL", "c1", &conf).empty_ok();
    let left: BTreeSet<String> = std::fs::read_dir(w.net_dir("ix"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, set(&["last_reserved_ip.0", "lock"]));
}

/// Runs `f` on a thread with a mount namespace of its own (private propagation) in which a tmpfs
/// of `size` is mounted on `dir`: the plugins it spawns see that mount, the rest of the machine
/// never does, and the mount goes away with the thread.
fn with_tmpfs<T: Send>(dir: &Path, size: &str, f: impl FnOnce() -> T + Send) -> T {
    use nix::mount::{MsFlags, mount};
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .expect("unshare(CLONE_NEWNS) failed: run the tests as root");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make the private mount namespace's mounts private");
            mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                MsFlags::empty(),
                Some(format!("size={size},mode=0755").as_str()),
            )
            .expect("mount a tmpfs");
            f()
        })
        .join()
        .unwrap()
    })
}

const PAGE: u64 = 4096;

/// A file that takes every free page of its (tmpfs) filesystem, and gives some back on demand.
struct Filler(File);

impl Filler {
    fn fill(path: &Path) -> Filler {
        let mut f = File::create(path).unwrap();
        let page = [0xa5u8; PAGE as usize];
        loop {
            match f.write(&page) {
                Ok(n) => assert_eq!(n as u64, PAGE, "tmpfs writes whole pages or nothing"),
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        Filler(f)
    }

    /// Frees exactly `pages` pages (a tmpfs file holds one page per 4 KiB written).
    fn free(&mut self, pages: u64) {
        let len = self.0.metadata().unwrap().len();
        self.0.set_len(len - pages * PAGE).unwrap();
    }
}

/// A full disk under `dataDir`, at each of ADD's writes in turn: the lease file, the
/// round-robin cursor `last_reserved_ip.0`, our index. A failed ADD is code 5 and leaves no
/// lease (the cursor put back too); an ADD whose index write failed succeeds and leaves the
/// index unmarked, so DEL still finds and frees its lease; once space is back, every address
/// of the range can be leased and released again.
#[test]
fn a_full_lease_store_fails_add_cleanly_and_recovers() {
    let w = World::new();
    let data = w.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    // A /29: .2 to .6.
    let conf = w.conf("1.1.0", "full", json!({"subnet": "10.95.0.0/29"}));
    let dir = w.net_dir("full");
    let cursor = dir.join("last_reserved_ip.0");
    let index_entries = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir.join(".tether"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    with_tmpfs(&data, "256k", || {
        let mut filler = Filler::fill(&data.join("filler"));

        // Not one free page: the lease file's write fails.
        let msg = w.ours("ADD", "c1", &conf).err(5);
        assert!(
            msg.contains("cannot write lease file")
                && msg.contains("10.95.0.2")
                && msg.contains("No space left on device")
                && msg.contains("is full"),
            "{msg}"
        );
        assert!(w.leases("full").is_empty());
        assert!(!cursor.exists());

        // One page: the lease file fits, the new cursor file does not. Both are undone.
        filler.free(1);
        let msg = w.ours("ADD", "c1", &conf).err(5);
        assert!(
            msg.contains("last_reserved_ip.0") && msg.contains("is full"),
            "{msg}"
        );
        assert!(
            w.leases("full").is_empty(),
            "the failed ADD left a lease: {:?}",
            w.leases("full")
        );
        assert!(!cursor.exists(), "the failed ADD left an empty cursor file");
        w.ours("DEL", "c1", &conf).empty_ok();

        // Two pages: lease and cursor fit, our index entry does not. The index is only a
        // hint, so the ADD succeeds; it is not marked complete, so DEL (which looks up c1 in
        // the index when it is) reads the leases and frees 10.95.0.2.
        filler.free(1);
        assert_eq!(addrs(&w.ours("ADD", "c1", &conf).ok()), ["10.95.0.2/29"]);
        assert_eq!(w.lease_content("full", "10.95.0.2"), "c1\r\neth0");
        assert!(!index_entries(&dir).contains("c1@eth0"));
        w.ours("DEL", "c1", &conf).empty_ok();
        assert!(w.leases("full").is_empty(), "DEL released nothing");

        // One page again (the lease's went back), and the cursor exists now: rewriting it in
        // place needs no new page, so an ADD fits.
        assert_eq!(addrs(&w.ours("ADD", "c2", &conf).ok()), ["10.95.0.3/29"]);
        w.ours("DEL", "c2", &conf).empty_ok();
        assert!(w.leases("full").is_empty());

        // Space is back: every address of the range is there to be leased, none was lost.
        drop(filler);
        std::fs::remove_file(data.join("filler")).unwrap();
        let mut got = BTreeSet::new();
        for i in 0..5 {
            got.extend(addrs(&w.ours("ADD", &format!("a{i}"), &conf).ok()));
        }
        assert_eq!(
            got,
            set(&[
                "10.95.0.2/29",
                "10.95.0.3/29",
                "10.95.0.4/29",
                "10.95.0.5/29",
                "10.95.0.6/29"
            ])
        );
        w.ours("ADD", "a5", &conf).err(50);
        assert_eq!(
            index_entries(&dir),
            set(&["a0@eth0", "a1@eth0", "a2@eth0", "a3@eth0", "a4@eth0"])
        );
        for i in 0..5 {
            w.ours("DEL", &format!("a{i}"), &conf).empty_ok();
        }
        let left: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, set(&["last_reserved_ip.0", "lock"]));
    });
}
