//! Two runtimes on one host, one address store: `tether run --net NAME` (after `tether network
//! create NAME --driver overlay`) and a runtime calling the plugin directly get distinct
//! addresses of the host subnet; `tether network ls/inspect` show the lease and the peers.

mod common;

use common::*;
use netns_fixtures::{bin_dir, ping};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use tether_overlay_state::Peer;

/// `tether` inside the fake host with private state (as the runtime's own tests run it).
struct Tether<'a> {
    h: &'a Host,
    cgroup_parent: String,
}

impl Tether<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let dir = self.h.th.dir();
        let mut c = self.h.ns().command(bin_dir().join("tether"));
        c.args(args)
            .env("TETHER_ROOT", dir.join("root"))
            .env("TETHER_CONFIG_DIR", dir.join("net.d"))
            .env("TETHER_CGROUP_PARENT", &self.cgroup_parent)
            .env("TETHER_CONFIG", dir.join("no-config.json"))
            .env("CNI_PATH", bin_dir())
            .env("TETHER_OVERLAY_DIR", &self.h.state)
            .env_remove("TETHER_CGROUP_MANAGER")
            .env_remove("CNI_ARGS")
            .stdin(Stdio::null());
        c
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        netns_fixtures::success_stdout(&out, &format!("tether {args:?}"))
    }

    fn cgroup_dirs(&self) -> Vec<std::path::PathBuf> {
        let out = Command::new("find")
            .args(["/sys/fs/cgroup", "-maxdepth", "4", "-type", "d", "-name"])
            .arg(&self.cgroup_parent)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(Into::into)
            .collect()
    }
}

impl Drop for Tether<'_> {
    fn drop(&mut self) {
        // A failed test must not leave containers or cgroups behind.
        if let Ok(out) = self.cmd(&["ps", "-a", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.cmd(&["rm", "-f", id]).output();
            }
        }
        for d in self.cgroup_dirs() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn tether_run_and_a_direct_plugin_call_share_one_address_store_and_ls_inspect_show_the_lease() {
    let h = Host::new();
    assert!(bin_dir().join("tether").is_file(), "build tether first");
    h.write_lease(&h.lease(SUBNET_A));
    let peer = Peer {
        public_ip: "192.168.50.2".parse().unwrap(),
        subnet: SUBNET_B.parse().unwrap(),
        vtep_mac: Some("02:00:00:00:00:02".into()),
    };
    h.dir().write_peers(std::slice::from_ref(&peer)).unwrap();
    let t = Tether {
        h: &h,
        cgroup_parent: format!("tether-ovtest-{}", std::process::id()),
    };
    let before = h.snapshot();

    t.ok(&["network", "create", NET, "--driver", "overlay"]);
    let ls = t.ok(&["network", "ls"]);
    let row = ls
        .lines()
        .find(|l| l.starts_with(NET))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(row.contains("overlay") && row.contains(SUBNET_A), "{ls}");

    // Runtime 1: tether. Runtime 2: the plugin called directly, with its own conflist name.
    t.ok(&[
        "run", "-d", "--name", "c1", "--net", NET, "--", "sleep", "60",
    ]);
    let st: Value = serde_json::from_str(&t.ok(&["inspect", "c1"])).unwrap();
    let a1 = st[0]["network"]["result"]["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let direct = h.conf_named("k8s-pod-network", json!({}));
    let ctr = h.th.container();
    let r = h.add(&ctr, "direct1", &direct).ok();
    let a2 = r["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(
        a1.starts_with("10.200.3.") && a2.starts_with("10.200.3."),
        "{a1} {a2}"
    );
    assert_ne!(a1, a2, "two containers of one host got one address");
    // They share the bridge and reach each other.
    let ip1: std::net::IpAddr = a1.split('/').next().unwrap().parse().unwrap();
    assert!(ping(&ctr, ip1), "direct container -> tether's");

    let insp: Value = serde_json::from_str(&t.ok(&["network", "inspect", NET])).unwrap();
    assert_eq!(insp["driver"], "overlay");
    assert_eq!(insp["overlay"]["hostSubnet"], SUBNET_A);
    assert_eq!(insp["overlay"]["peers"][0]["subnet"], SUBNET_B);
    assert_eq!(insp["overlay"]["peers"][0]["publicIp"], "192.168.50.2");
    assert!(
        insp["containers"][0]["addresses"][0]
            .as_str()
            .unwrap()
            .starts_with(&a1[..a1.len() - 3])
    );

    // `network rm` is refused while tether's container uses it; GC of tether's network leaves
    // the direct runtime's attachment alone.
    t.ok(&["rm", "-f", "c1"]);
    t.ok(&["network", "prune"]);
    assert_eq!(
        h.records(),
        vec![("direct1".to_string(), "eth0".to_string())]
    );
    h.check(&ctr, "direct1", &direct, &r).ok_empty();
    h.del("direct1", &direct, Some(&r)).ok_empty();
    t.ok(&["network", "rm", NET]);
    let ps = t.ok(&["ps", "-a", "-q"]);
    assert!(ps.trim().is_empty(), "containers left: {ps}");
    // Links, addresses, routes, rules, and the overlay directory (lease, peers, no record).
    assert_nothing_left(&before, &h.snapshot());
}

#[test]
fn tether_run_before_the_agent_has_a_lease_fails_with_the_plugins_message_and_leaves_nothing() {
    let h = Host::new();
    let t = Tether {
        h: &h,
        cgroup_parent: format!("tether-ovtest-nl-{}", std::process::id()),
    };
    let before = h.snapshot();
    t.ok(&["network", "create", NET, "--driver", "overlay"]);
    let ls = t.ok(&["network", "ls"]);
    assert!(ls.contains("(no lease)"), "{ls}");
    let out = t
        .cmd(&["run", "--rm", "--net", NET, "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no lease of a host subnet yet"), "{err}");
    let ps = t.ok(&["ps", "-a", "-q"]);
    assert!(ps.trim().is_empty(), "containers left: {ps}");
    t.ok(&["network", "rm", NET]);
    assert_nothing_left(&before, &h.snapshot());
}
