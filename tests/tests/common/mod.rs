//! Shared by the test binaries in this directory: the per-plugin setups and a few assertions on
//! top of `netns_fixtures` (which runs the binaries inside throwaway namespaces).

// Each test binary uses a different subset of these helpers.
#![allow(dead_code, unused_imports)]

use std::os::fd::AsFd;
use std::path::PathBuf;

pub use netns_fixtures::{
    Cni, CniOutput, Netns, TestHost, assert_snapshot_eq, bin_dir, plugin, reference_plugin,
};
use serde_json::Value;
use tether_netlink::{IpNetwork, RouteSpec};

/// Every spec version, oldest first.
pub const VERSIONS: &[&str] = cni::version::ALL;

/// Our plugin binaries that take part in the protocol suite.
pub const PLUGINS: &[&str] = &[
    "loopback",
    "none",
    "host",
    "container",
    "bridge",
    "host-local",
];

/// A path that does not exist, as `CNI_NETNS` of a container that is gone.
pub const MISSING_NETNS: &str = "/run/netns/tether-test-does-not-exist";

pub trait RunChecked {
    /// Runs with `TETHER_LOG=debug` and asserts what holds for every invocation of every plugin:
    /// it finishes, and its stdout is empty or exactly one JSON document (so a log line that
    /// leaks to stdout fails the test that caused it).
    fn run_checked(self) -> CniOutput;
}

impl RunChecked for Cni<'_> {
    #[track_caller]
    fn run_checked(self) -> CniOutput {
        let out = self.env("TETHER_LOG", "debug").run();
        assert!(!out.timed_out, "plugin timed out:\n{out}");
        let _ = out.json();
        out
    }
}

pub trait ErrJson {
    /// The error object of a failed run: asserts a non-zero exit and `code` + `msg` on stdout.
    fn err(&self) -> Value;
}

impl ErrJson for CniOutput {
    #[track_caller]
    fn err(&self) -> Value {
        assert_ne!(self.status, 0, "expected a failure:\n{self}");
        let j = self.json();
        assert!(j["code"].is_u64(), "error without a numeric code:\n{self}");
        assert!(j["msg"].is_string(), "error without a msg:\n{self}");
        j
    }
}

/// A fresh namespace; panics (never skips) when namespaces cannot be made.
#[track_caller]
pub fn netns() -> Netns {
    Netns::new().unwrap_or_else(|e| panic!("cannot create a network namespace: {e}"))
}

/// Is `lo` administratively up in `ns`?
pub fn lo_is_up(ns: &Netns) -> bool {
    ns.netlink().link_by_name("lo").unwrap().unwrap().up
}

pub fn set_lo(ns: &Netns, up: bool) {
    let h = ns.netlink();
    let lo = h.link_by_name("lo").unwrap().unwrap();
    if up {
        h.set_up(lo.index).unwrap()
    } else {
        h.set_down(lo.index).unwrap()
    }
}

/// Adds `cidr` to `lo` in `ns`.
pub fn add_lo_addr(ns: &Netns, cidr: &str) {
    let h = ns.netlink();
    let lo = h.link_by_name("lo").unwrap().unwrap();
    h.add_addr(lo.index, net(cidr), true).unwrap();
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Addresses put on the fake host (for `host`) and in the target container (for `container`), so
/// their results carry a v4 and a v6 address.
pub const HOST_V4: &str = "10.99.0.1/24";
pub const HOST_V6: &str = "fd99::1/64";
pub const CTR_V4: &str = "10.99.1.2/24";
pub const CTR_V6: &str = "fd99:1::2/64";
/// A link-local address, which reports must leave out.
pub const LINK_LOCAL: &str = "fe80::99/64";

/// Gives `ns` a link carrying global addresses: a veth pair `v0`/`v1` (dummy links do not exist on
/// the test kernel), both up, with `v4`, `v6` and [`LINK_LOCAL`] on `v0` (no DAD). What the kernel
/// adds later on its own (generated link-local addresses and their routes) is left out of both
/// plugin results and snapshots.
pub fn add_global_addrs(ns: &Netns, v4: &str, v6: &str) {
    let h = ns.netlink();
    let v0 = h
        .create_veth("v0", None, None, "v1", ns.as_fd(), None, None)
        .unwrap();
    let v1 = h.link_by_name("v1").unwrap().unwrap().index;
    h.set_up(v1).unwrap();
    h.add_addr(v0, net(v4), false).unwrap();
    h.add_addr(v0, net(v6), true).unwrap();
    h.add_addr(v0, net(LINK_LOCAL), true).unwrap();
}

/// Adds a default route via `gw` (v4 or v6) in `ns`.
pub fn add_default_route(ns: &Netns, gw: &str) {
    let gw: std::net::IpAddr = gw.parse().unwrap();
    let dst = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
    ns.netlink()
        .add_route(&RouteSpec {
            gw: Some(gw),
            ..RouteSpec::new(net(dst))
        })
        .unwrap();
}

/// A path that exists but is not a namespace.
pub fn not_a_netns() -> tempfile::NamedTempFile {
    tempfile::NamedTempFile::new().unwrap()
}

/// A fake host and one container namespace, set up so that an ADD of `plugin` with
/// [`Setup::conf`] succeeds. Plugins always run inside the fake host, never in the test's own
/// namespace.
pub struct Setup {
    pub plugin: &'static str,
    pub host: TestHost,
    pub ctr: Netns,
}

impl Setup {
    pub fn new(plugin: &'static str) -> Setup {
        let host = TestHost::new();
        let ctr = host.container();
        match plugin {
            "host" => add_global_addrs(&host, HOST_V4, HOST_V6),
            "container" => add_global_addrs(&ctr, CTR_V4, CTR_V6),
            _ => {}
        }
        Setup { plugin, host, ctr }
    }

    /// The minimal valid network config of this plugin for spec `version`.
    pub fn conf(&self, version: &str) -> Value {
        let mut c = serde_json::json!({
            "cniVersion": version,
            "name": "testnet",
            "type": self.plugin,
        });
        if matches!(self.plugin, "bridge" | "host-local") {
            // host-local gets the whole upper config, as a delegate does.
            c["type"] = "bridge".into();
            c["ipam"] = serde_json::json!({
                "type": "host-local",
                "subnet": "10.22.0.0/24",
                "dataDir": self.host.ipam_dir(),
            });
        }
        c
    }

    /// `CNI_NETNS` for a successful ADD: the fake host itself for `host`, else the container.
    pub fn netns_path(&self) -> PathBuf {
        if self.plugin == "host" {
            self.host.path()
        } else {
            self.ctr.path()
        }
    }

    /// An invocation of this plugin inside the fake host, with nothing set.
    pub fn bare(&self) -> Cni<'_> {
        self.host.cni(plugin(self.plugin))
    }

    /// An invocation with the complete, valid environment for `command`.
    pub fn cni(&self, command: &str) -> Cni<'_> {
        self.bare()
            .command(command)
            .container_id("ctr1")
            .netns(self.netns_path())
            .ifname("eth0")
            .cni_path([bin_dir()])
    }

    pub fn add(&self, version: &str) -> Value {
        self.cni("ADD").stdin(self.conf(version)).run_checked().ok()
    }
}
