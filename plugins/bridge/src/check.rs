//! CHECK: every object ADD created and listed in `prevResult` is still there and still as ADD
//! left it: the bridge, the host veth (a veth, on the bridge, peer of the container interface),
//! the container interface (MAC, addresses, routes), the gateway addresses on the bridge, the
//! network's shared masquerade chain and jump for each of the container's subnets. The IPAM is
//! checked first.

use std::os::fd::AsFd;

use cni::{CniResult, Error, Interface, Request};
use tether_kit::RequestExt;
use tether_netlink::{Link, NsHandle};

use crate::add::gateway_addrs;
use crate::config::{Config, format_mac};
use crate::names::host_veth_name;
use crate::plan::route_gateway;
use crate::{nf, nl};

fn failed(msg: String) -> Error {
    Error::internal(msg)
}

pub fn check(req: &Request) -> Result<(), Error> {
    let conf = Config::parse(req)?;
    if let Some(ipam) = &conf.ipam {
        cni::delegate::check(ipam, req)?;
    }
    let prev =
        req.prev_result_required("CHECK needs prevResult (the result of the ADD being checked)")?;
    let netns = req.netns_required()?;
    let netns_text = netns.display().to_string();
    let ns_fd = tether_kit::netns::open(netns)?;
    let host = NsHandle::current().map_err(nl("open netlink in the host namespace"))?;
    let cont = NsHandle::for_netns(ns_fd.as_fd()).map_err(nl("open netlink in the container"))?;

    let find = |name: &str, in_sandbox: bool| -> Option<&Interface> {
        prev.interfaces
            .iter()
            .find(|i| i.name == name && i.sandbox.is_some() == in_sandbox)
    };

    // The bridge.
    let br_if = find(&conf.bridge, false)
        .ok_or_else(|| failed(format!("prevResult does not list bridge {}", conf.bridge)))?;
    let br = host
        .link_by_name(&conf.bridge)
        .map_err(nl("look up the bridge"))?
        .ok_or_else(|| failed(format!("bridge {} does not exist", conf.bridge)))?;
    if br.kind.as_deref() != Some("bridge") {
        return Err(failed(format!("{} is not a bridge", conf.bridge)));
    }
    same_mac(&br, br_if)?;
    if conf.promisc_mode && !br.promisc {
        return Err(failed(format!(
            "bridge {} is not promiscuous although promiscMode is set",
            conf.bridge
        )));
    }

    // The container interface.
    let c_if = prev
        .interfaces
        .iter()
        .find(|i| i.name == req.ifname && i.sandbox.as_deref() == Some(netns_text.as_str()))
        .ok_or_else(|| {
            failed(format!(
                "prevResult does not list {} in sandbox {netns_text}",
                req.ifname
            ))
        })?;
    let cl = cont
        .link_by_name(&req.ifname)
        .map_err(nl("look up the container interface"))?
        .ok_or_else(|| failed(format!("{} does not exist in {netns_text}", req.ifname)))?;
    if cl.kind.as_deref() != Some("veth") {
        return Err(failed(format!(
            "{} in the container is not a veth",
            req.ifname
        )));
    }
    same_mac(&cl, c_if)?;

    // The host veth: ours by name, its peer is the container interface, it is on the bridge.
    let veth_name = host_veth_name(&req.container_id, &req.ifname);
    let hv = host
        .link_by_name(&veth_name)
        .map_err(nl("look up the host veth"))?
        .ok_or_else(|| failed(format!("host veth {veth_name} does not exist")))?;
    if hv.kind.as_deref() != Some("veth") {
        return Err(failed(format!("{veth_name} is not a veth")));
    }
    if let Some(hv_if) = find(&veth_name, false) {
        same_mac(&hv, hv_if)?;
    }
    if hv.peer_index != Some(cl.index) || cl.peer_index != Some(hv.index) {
        return Err(failed(format!(
            "host veth {veth_name} is not the peer of {} in the container",
            req.ifname
        )));
    }
    if hv.master != Some(br.index) {
        return Err(failed(format!(
            "host veth {veth_name} is not attached to bridge {}",
            conf.bridge
        )));
    }

    check_container_ip(req, prev, &cont, &cl)?;

    let br_addrs = host
        .addrs(Some(br.index))
        .map_err(nl("list bridge addresses"))?;
    for gw in gateway_addrs(&conf, prev) {
        if !br_addrs
            .iter()
            .any(|a| a.net.ip() == gw.ip() && a.net.prefix() == gw.prefix())
        {
            return Err(failed(format!(
                "gateway address {gw} missing from bridge {}",
                conf.bridge
            )));
        }
    }

    if conf.ip_masq && !prev.ips.is_empty() {
        let addrs: Vec<_> = prev.ips.iter().map(|i| i.address).collect();
        tether_netfilter::select_for(conf.firewall)
            .masquerade_check(&conf.network, &addrs)
            .map_err(nf("check masquerading"))?;
    }
    Ok(())
}

fn same_mac(link: &Link, want: &Interface) -> Result<(), Error> {
    let Some(mac) = &want.mac else {
        return Ok(());
    };
    let have = link.mac.map(format_mac).unwrap_or_default();
    if !have.eq_ignore_ascii_case(mac) {
        return Err(failed(format!(
            "{} has MAC {have}, prevResult says {mac}",
            link.name
        )));
    }
    Ok(())
}

/// The addresses prevResult puts on the container interface, and its routes.
fn check_container_ip(
    req: &Request,
    prev: &CniResult,
    cont: &NsHandle,
    cl: &Link,
) -> Result<(), Error> {
    let ours = |i: &cni::IpConfig| match i.interface {
        Some(idx) => prev
            .interfaces
            .get(idx)
            .is_some_and(|f| f.name == req.ifname),
        None => true,
    };
    let addrs = cont
        .addrs(Some(cl.index))
        .map_err(nl("list container addresses"))?;
    for ip in prev.ips.iter().filter(|i| ours(i)) {
        if !addrs
            .iter()
            .any(|a| a.net.ip() == ip.address.ip() && a.net.prefix() == ip.address.prefix())
        {
            return Err(failed(format!(
                "address {} missing from {} in the container",
                ip.address, req.ifname
            )));
        }
    }
    for v6 in [false, true] {
        let want: Vec<&cni::Route> = prev
            .routes
            .iter()
            .filter(|r| r.dst.is_ipv6() == v6)
            .collect();
        if want.is_empty() {
            continue;
        }
        let table = cont.routes(v6).map_err(nl("list container routes"))?;
        for r in want {
            let gw = route_gateway(r, &prev.ips);
            let present = table.iter().any(|t| {
                t.dst.network() == r.dst.network() && t.dst.prefix() == r.dst.prefix() && t.gw == gw
            });
            if !present {
                return Err(failed(format!(
                    "route to {}{} missing in the container",
                    r.dst,
                    gw.map(|g| format!(" via {g}")).unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}
