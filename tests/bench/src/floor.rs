//! The kernel floor: the kernel objects of one bridge ADD made without any plugin, by two
//! `ip -batch -` processes, timed like a plugin side. A bridge port join costs the kernel
//! O(ports) (`br_add_if`, port-state selection, floods to every port), so this side shows in the
//! same run how much of the ADD time, and of its growth as the bridge fills, is the kernel's own.
//! Netlink only: no IPAM (addresses follow the container index), no iptables. The two sysctls
//! the plugins set on the container interface come from the namespace's defaults, set untimed,
//! so the floor's kernel work includes their effect (the gratuitous ARP of `arp_notify`, flooded
//! to every port; no DAD on the link-local address).

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use netns_fixtures::Netns;
use serde_json::json;

use crate::cni::{BRIDGE, IFNAME, Op, SUBNET, Side};
use crate::exec;

pub const LABEL: &str = "floor";

/// Pinned like our plugin pins it: a bridge whose MAC is not set by hand recomputes it from all
/// its ports on every join, work that our ADD does not cause.
const BRIDGE_MAC: &str = "02:00:0a:58:00:01";

/// The floor as a side of the rounds. It has no plugin directory: `scenario::run_round`
/// recognises it by its label.
pub fn side() -> Side {
    Side {
        firewall: None,
        label: LABEL,
        dir: PathBuf::new(),
    }
}

/// The scenario subnet as (network, prefix length).
fn subnet() -> (u32, u8) {
    let (addr, prefix) = SUBNET.split_once('/').expect("SUBNET is a CIDR");
    let addr: Ipv4Addr = addr.parse().expect("SUBNET is IPv4");
    (addr.into(), prefix.parse().expect("SUBNET prefix"))
}

/// The first host address, where host-local puts the gateway.
fn gateway() -> Ipv4Addr {
    Ipv4Addr::from(subnet().0 + 1)
}

/// Container `i`'s address: the ones host-local hands out in order after the gateway.
fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(subnet().0 + 2 + i as u32)
}

/// `ip -batch -` inside `ns`, entered before exec as the plugins' host netns is. (`ip -n` would
/// not do: iproute2 6.1 looks its argument up under /var/run/netns even when it is a path.)
fn batch(ns: &Netns) -> Command {
    let mut cmd = ns.command("ip");
    cmd.args(["-batch", "-"]);
    cmd
}

/// The bridge with its gateway address, as the plugin's first ADD leaves it. Made once per round
/// before the first ADD, untimed.
pub fn bridge(host: &Netns) -> io::Result<()> {
    let (_, prefix) = subnet();
    let script = format!(
        "link add {BRIDGE} address {BRIDGE_MAC} type bridge\n\
         addr add {}/{prefix} dev {BRIDGE}\n\
         link set {BRIDGE} up\n",
        gateway()
    );
    let o = exec::run(batch(host), script.as_bytes())?;
    if !o.ok() {
        return Err(io::Error::other(format!("create bridge: {}", o.failure())));
    }
    Ok(())
}

/// Host: the veth pair (peer straight into the container) and the port on the bridge, with no
/// IPv6 link-local address as our plugin does (its DAD and MLD would be flooded to every port).
/// Container: address, up, default route. The result carries the address for the leftover check.
pub fn add(i: usize, host: &Netns, container: &Netns) -> Op {
    container.set_sysctl("net/ipv4/conf/default/arp_notify", "1");
    container.set_sysctl("net/ipv6/conf/default/accept_dad", "0");
    let start = Instant::now();
    let mut op = Op::default();
    let (_, prefix) = subnet();
    // Unique per container within the round's host; well under IFNAMSIZ.
    let veth = format!("fl{i}");
    let host_script = format!(
        "link add {veth} type veth peer name {IFNAME} netns {}\n\
         link set {veth} addrgenmode none master {BRIDGE} up\n",
        container.path().display()
    );
    let cont_script = format!(
        "addr add {}/{prefix} dev {IFNAME}\nlink set {IFNAME} up\nroute add default via {}\n",
        address(i),
        gateway()
    );
    if op.record(
        "ip host",
        "ADD",
        exec::run(batch(host), host_script.as_bytes()),
    ) && op.record(
        "ip container",
        "ADD",
        exec::run(batch(container), cont_script.as_bytes()),
    ) {
        op.result = Some(json!({ "ips": [{ "address": format!("{}/{prefix}", address(i)) }] }));
    }
    op.wall = start.elapsed();
    op
}

/// Deleting the container end deletes the pair, and with it the bridge port.
pub fn del(container: &Netns) -> Op {
    let start = Instant::now();
    let mut op = Op::default();
    let mut cmd = container.command("ip");
    cmd.args(["link", "del", IFNAME]);
    op.record("ip container", "DEL", exec::run(cmd, b""));
    op.wall = start.elapsed();
    op
}
