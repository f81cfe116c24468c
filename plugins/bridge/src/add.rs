//! ADD: validate everything first, then create, pushing each removal on the undo stack.
//!
//! Order (differs from the reference only where it avoids side effects on failure): checks that
//! cannot change anything (config, the interface name in the container, a non-bridge link with
//! the bridge's name, a live host veth for this attachment) → IPAM ADD → under the bridge lock:
//! bridge and gateway addresses → veth pair (peer born in the container) → container addresses,
//! up, routes → forwarding, while the network's shared masquerade chain is checked beside them →
//! the host veth's bridge port forwarding (`wait_for_port`) → result. Everything from preflight
//! on holds the network's and the bridge's port locks shared (see the lock module): a last DEL
//! cannot remove the chains or the bridge under this ADD.
//! A failed ADD, once unwound and unlocked, removes what the network left when no other
//! attachment of it remains (`teardown`), so it leaves the host as it found it.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use cni::{CniResult, Error, Interface, Request};
use ipnetwork::IpNetwork;
use tether_kit::RequestExt;
use tether_netlink::{
    IFA_F_TENTATIVE, Link, NsHandle, RTPROT_BOOT, RouteSpec, VethSpec, sysctl_get, sysctl_set,
};

use crate::config::{Config, format_mac};
use crate::lock::{Mode, lock_bridge, lock_network, lock_ports};
use crate::names::{alias, bridge_mark, host_veth_name};
use crate::plan::{Plan, plan, route_gateway};
use crate::port::wait_for_port;
use crate::undo::Undo;
use crate::{nf, nl, teardown};

/// `IFA_F_DADFAILED`
const IFA_F_DADFAILED: u32 = 0x08;
/// How long `enabledad` waits for IPv6 duplicate address detection, as the reference does.
const DAD_TIMEOUT: Duration = Duration::from_secs(5);

pub fn add(req: &Request) -> Result<CniResult, Error> {
    let conf = Config::parse(req)?;
    conf.validate()?;
    let netns = req.netns_required()?;
    let ns_fd: OwnedFd = tether_kit::netns::open(netns)?;
    let host = NsHandle::current().map_err(nl("open netlink in the host namespace"))?;
    let cont = NsHandle::for_netns(ns_fd.as_fd()).map_err(nl(format!(
        "open netlink in container netns {}",
        netns.display()
    )))?;
    let veth = host_veth_name(&req.container_id, &req.ifname);

    let created = {
        // Shared: parallel ADDs run side by side, and a DEL removing what the network or the
        // bridge leaves (exclusive) waits until this ADD's veth exists and its masquerading is
        // in place, or this ADD waits until that removal is done (see the lock module). Taken
        // before preflight, so the bridge preflight sees stays until this ADD is done with it.
        let _network = lock_network(&conf.network, Mode::Shared)?;
        let _ports = lock_ports(&conf.bridge, Mode::Shared)?;
        // A refusal here created nothing, so it returns without the teardown below.
        let existing_bridge = preflight(&conf, req, netns, &host, &cont, &veth)?;
        tracing::debug!("phase: preflight checks done");
        create(
            &conf,
            req,
            netns,
            &host,
            &cont,
            ns_fd.as_fd(),
            &veth,
            existing_bridge,
        )
    };
    if created.is_err() {
        // The rollback deleted this ADD's veth; when no other attachment is left, what this
        // ADD may have set up for the network (its chains, our bridge) goes too. Only after
        // the shared locks are released: the removal takes them exclusive.
        if let Err(e) = teardown::remove_if_unused(&conf, &host) {
            tracing::warn!(error = %e, "removing the network's state after a failed ADD");
        }
    }
    created
}

/// Everything ADD creates, each removal pushed on the undo stack. Runs under the network's and
/// the bridge's shared locks; `existing_bridge` is the bridge as preflight found it.
#[allow(clippy::too_many_arguments)] // one call site, each argument named there
fn create(
    conf: &Config,
    req: &Request,
    netns: &Path,
    host: &NsHandle,
    cont: &NsHandle,
    ns_fd: BorrowedFd<'_>,
    veth: &str,
    existing_bridge: Option<Link>,
) -> Result<CniResult, Error> {
    let mut undo = Undo::new();

    // IPAM first: when the pool is exhausted nothing else has been touched.
    let ipam = match &conf.ipam {
        Some(ipam_type) => {
            let r = cni::delegate::add(ipam_type, req)?;
            undo.push(format!("IPAM {ipam_type} DEL"), move || {
                cni::delegate::del(ipam_type, req).map_err(|e| e.to_string())
            });
            Some(r)
        }
        None => None,
    };
    tracing::debug!("phase: IPAM ADD done");
    let plan = ipam.as_ref().map(|r| plan(conf, r)).transpose()?;
    let bridge_addrs = plan.as_ref().map_or(&[][..], |p| &p.bridge_addrs[..]);

    let (bridge, bridge_created) = {
        let _lock = lock_bridge(&conf.bridge)?;
        let (bridge, created) = ensure_bridge(host, conf, existing_bridge)?;
        for addr in bridge_addrs {
            ensure_addr(host, &bridge, *addr, conf.force_address)?;
        }
        (bridge, created)
    };
    tracing::debug!(
        created = bridge_created,
        "phase: bridge and gateway addresses ready"
    );

    // The alias records the attachment for GC (the name is a hash); a pair whose alias cannot
    // be set is deleted again by create_veth_with.
    let record = alias(&conf.network, &req.container_id, &req.ifname);
    let host_veth = host
        .create_veth_link(&VethSpec {
            mtu: conf.mtu,
            master: Some(bridge.index),
            alias: record.as_deref(),
            // A bridge port needs no address of its own; without one it stays quiet (see
            // VethSpec::ipv6_link_local), which keeps ADD flatter as the bridge fills up.
            ipv6_link_local: false,
            peer_mac: conf.mac,
            peer_mtu: conf.mtu,
            ..VethSpec::new(veth, &req.ifname, ns_fd)
        })
        .map_err(|e| match e {
            tether_netlink::Error::Exists(_) => Error::invalid_env(format!(
                "create veth {veth} / {} in {}: {e} (a concurrent ADD for the same container and interface?)",
                req.ifname,
                netns.display()
            )),
            // br_add_if refuses a 1024th port (BR_MAX_PORTS is 1024 port numbers, 0 reserved) with EXFULL.
            e if e.errno() == Some(libc::EXFULL) => Error::internal(format!(
                "bridge {} already has the kernel's maximum of 1023 ports: put further containers on a network with another \"bridge\"",
                conf.bridge
            )),
            e => nl(format!("create veth {veth} on bridge {}", conf.bridge))(e),
        })?;
    let host_idx = host_veth.index;
    undo.push(format!("delete veth {veth}"), move || {
        host.del_link(host_idx).map_err(|e| e.to_string())
    });
    host.set_bridge_port(
        host_idx,
        conf.hairpin_mode.then_some(true),
        conf.port_isolation.then_some(true),
    )
    .map_err(nl(format!("set bridge-port options of {veth}")))?;
    tracing::debug!(%veth, "phase: veth pair created and on the bridge");

    // The network's shared masquerade chain (see tether-netfilter's masq module) is one
    // iptables exec, independent of the container's interface: it runs on a second thread while
    // this one configures the container, so its time and the kernel's netlink work overlap
    // instead of adding up. Nothing of the chain belongs to this container, so nothing goes on
    // the undo stack, as for the bridge: both go with the network's last attachment. A bridge
    // this ADD created (a fresh host, after a reboot) means the chain is most likely missing
    // too: then it is created without checking first.
    let masq_addrs: Option<Vec<IpNetwork>> = plan
        .as_ref()
        .filter(|_| conf.ip_masq)
        .map(|p| p.ips.iter().map(|i| i.address).collect());
    let cont_link = std::thread::scope(|s| {
        let masq = masq_addrs.as_ref().map(|addrs| {
            s.spawn(|| {
                tether_netfilter::select_for(conf.firewall).masquerade_ensure(
                    &conf.network,
                    addrs,
                    bridge_created,
                )
            })
        });
        let configured = (|| -> Result<Link, Error> {
            let cont_link = cont
                .link_by_name(&req.ifname)
                .map_err(nl("read the new container interface"))?
                .ok_or_else(|| {
                    Error::internal(format!(
                        "{} vanished from {} right after creation",
                        req.ifname,
                        netns.display()
                    ))
                })?;
            configure_container(conf, req, cont, ns_fd, &cont_link, plan.as_ref())?;
            tracing::debug!("phase: container interface configured");
            if let Some(p) = plan.as_ref().filter(|_| conf.is_gateway) {
                enable_forwarding(&p.bridge_addrs)?;
            }
            Ok(cont_link)
        })();
        if let Some(masq) = masq {
            let masq = masq.join().expect("the masquerade worker panicked");
            // The container's error first: it is what went wrong for this ADD.
            let cont_link = configured?;
            masq.map_err(nf("set up masquerading"))?;
            tracing::debug!("phase: masquerading ready");
            return Ok(cont_link);
        }
        configured
    })?;
    tracing::debug!("phase: forwarding and masquerading ready");

    let host_veth = if conf.disable_container_interface {
        // The container end stays down: the port has no carrier and will not forward until
        // the user brings it up, so there is nothing to wait for.
        host_veth
    } else {
        wait_for_port(host, host_veth)?
    };
    tracing::debug!("phase: bridge port forwarding");

    let result = build_result(conf, req, host, &bridge, &host_veth, &cont_link, plan, ipam)?;
    undo.commit();
    tracing::debug!("phase: result built");
    Ok(result)
}

/// Everything that can be refused without changing anything. Returns the bridge when it exists.
fn preflight(
    conf: &Config,
    req: &Request,
    netns: &Path,
    host: &NsHandle,
    cont: &NsHandle,
    veth: &str,
) -> Result<Option<Link>, Error> {
    if cont
        .link_by_name(&req.ifname)
        .map_err(nl("look up CNI_IFNAME in the container"))?
        .is_some()
    {
        return Err(Error::invalid_env(format!(
            "CNI_IFNAME {:?} already exists in container netns {}: use another interface name, or DEL the attachment that created it",
            req.ifname,
            netns.display()
        )));
    }
    let bridge = host
        .link_by_name(&conf.bridge)
        .map_err(nl(format!("look up bridge {}", conf.bridge)))?;
    if let Some(l) = &bridge {
        not_a_bridge(l)?;
    }
    if host
        .link_by_name(veth)
        .map_err(nl(format!("look up host veth {veth}")))?
        .is_some()
    {
        return Err(Error::invalid_env(format!(
            "host interface {veth} for container {} interface {} already exists: that attachment is still live (DEL it first)",
            req.container_id, req.ifname
        )));
    }
    Ok(bridge)
}

fn not_a_bridge(l: &Link) -> Result<(), Error> {
    if l.kind.as_deref() == Some("bridge") {
        return Ok(());
    }
    Err(Error::invalid_config(format!(
        "{:?} already exists but is not a bridge (it is a {} link): set \"bridge\" to another name or remove that link",
        l.name,
        l.kind.as_deref().unwrap_or("kind-less")
    )))
}

/// Creates the bridge or reuses it. Called under the bridge lock; `EEXIST` still means "someone
/// else (another runtime, without our lock) created it": re-read and verify.
/// Also says whether this call created it. `seen` is the bridge as preflight found it: a bridge
/// that existed then still does (only a last DEL or GC deletes one of ours, and they need the
/// port lock this ADD has held since before preflight), so only a missing one is looked up
/// again, now under the bridge lock.
fn ensure_bridge(
    host: &NsHandle,
    conf: &Config,
    seen: Option<Link>,
) -> Result<(Link, bool), Error> {
    let name = &conf.bridge;
    let existing = match seen {
        Some(l) => Some(l),
        None => host
            .link_by_name(name)
            .map_err(nl(format!("look up bridge {name}")))?,
    };
    let (mut br, created) = match existing {
        Some(l) => (l, false),
        None => match host.create_bridge(name, conf.mtu, false) {
            Ok(l) => {
                mark_bridge(host, &l, &conf.network)?;
                (l, true)
            }
            Err(tether_netlink::Error::Exists(_)) => (
                host.link_by_name(name)
                    .map_err(nl(format!("look up bridge {name}")))?
                    .ok_or_else(|| Error::internal(format!("bridge {name} exists and vanished")))?,
                false,
            ),
            Err(e) => return Err(nl(format!("create bridge {name}"))(e)),
        },
    };
    not_a_bridge(&br)?;
    if created || conf.is_gateway {
        // Pin the MAC: otherwise the kernel gives the bridge the lowest MAC among its ports, so
        // it changes as containers come and go and neighbours keep a stale entry (as the
        // reference and netavark do).
        if let Some(mac) = br.mac {
            host.set_mac(br.index, mac)
                .map_err(nl(format!("pin the MAC of bridge {name}")))?;
        }
    }
    if created {
        // We own the bridge's routes; RAs from containers must not configure it.
        let _ = sysctl_set(None, &format!("net/ipv6/conf/{name}/accept_ra"), "0");
    }
    if conf.promisc_mode && !br.promisc {
        host.set_promisc(br.index, true)
            .map_err(nl(format!("set bridge {name} promiscuous")))?;
        br.promisc = true;
    }
    if !br.up {
        host.set_up(br.index)
            .map_err(nl(format!("set bridge {name} up")))?;
        br.up = true;
    }
    Ok((br, created))
}

/// Marks a bridge this ADD just created as ours (`names::bridge_mark`), so that the last DEL may
/// delete it again; a bridge that cannot be marked is deleted at once (an unmarked one would
/// stay forever).
fn mark_bridge(host: &NsHandle, br: &Link, network: &str) -> Result<(), Error> {
    let Some(mark) = bridge_mark(network) else {
        tracing::debug!(bridge = %br.name, "network name too long for a bridge mark: the bridge will stay");
        return Ok(());
    };
    host.set_alias(br.index, &mark).map_err(|e| {
        if let Err(undo) = host.del_link(br.index) {
            tracing::warn!(error = %undo, bridge = %br.name, "deleting the unmarked bridge failed");
        }
        nl(format!("mark bridge {} as Tether's", br.name))(e)
    })
}

/// Puts `want` (gateway/prefix) on the bridge. As the reference: another IPv4 address, or an
/// overlapping IPv6 one, is a conflict unless `forceAddress`, which replaces it.
fn ensure_addr(host: &NsHandle, br: &Link, want: IpNetwork, force: bool) -> Result<(), Error> {
    let addrs = host
        .addrs(Some(br.index))
        .map_err(nl(format!("list addresses of bridge {}", br.name)))?;
    for a in addrs.iter().filter(|a| a.net.is_ipv4() == want.is_ipv4()) {
        if a.net.ip() == want.ip() && a.net.prefix() == want.prefix() {
            return Ok(());
        }
        // Link-local (scope link) IPv6 addresses never conflict with a gateway.
        let conflicts = want.is_ipv4()
            || (a.scope == 0 && (a.net.contains(want.ip()) || want.contains(a.net.ip())));
        if !conflicts {
            continue;
        }
        if !force {
            return Err(Error::invalid_config(format!(
                "bridge {:?} already has address {}, different from {} that this network needs as its gateway: remove the old address (ip addr del {} dev {}), set \"forceAddress\": true, or use another \"bridge\"",
                br.name, a.net, want, a.net, br.name
            )));
        }
        match host.del_addr(br.index, a.net) {
            Ok(()) | Err(tether_netlink::Error::NotFound(_)) => {}
            Err(e) => {
                return Err(nl(format!("remove {} from bridge {}", a.net, br.name))(e));
            }
        }
    }
    // No DAD on the gateway: the bridge is ours and DAD would leave it unusable for a second.
    match host.add_addr(br.index, want, true) {
        Ok(()) | Err(tether_netlink::Error::Exists(_)) => Ok(()),
        Err(e) => Err(nl(format!("add {want} to bridge {}", br.name))(e)),
    }
}

/// Sysctls, addresses, link state and routes inside the container.
fn configure_container(
    conf: &Config,
    req: &Request,
    cont: &NsHandle,
    ns: std::os::fd::BorrowedFd<'_>,
    link: &Link,
    plan: Option<&Plan>,
) -> Result<(), Error> {
    let ifname = &req.ifname;
    let Some(plan) = plan else {
        // L2 only: nothing to configure but the link state.
        if !conf.disable_container_interface {
            cont.set_up(link.index)
                .map_err(nl(format!("set {ifname} up in the container")))?;
        }
        return Ok(());
    };
    let has_v6 = plan.ips.iter().any(|i| i.address.is_ipv6());
    // Missing IPv6 sysctls (IPv6 disabled at boot) only matter when we have IPv6 addresses.
    if conf.enable_dad {
        let _ = sysctl_set(
            Some(ns),
            &format!("net/ipv6/conf/{ifname}/enhanced_dad"),
            "1",
        );
        let _ = sysctl_set(Some(ns), &format!("net/ipv6/conf/{ifname}/accept_dad"), "1");
    } else {
        let _ = sysctl_set(Some(ns), &format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
    }
    let _ = sysctl_set(Some(ns), &format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
    if has_v6 {
        for dev in ["lo", ifname.as_str()] {
            let key = format!("net/ipv6/conf/{dev}/disable_ipv6");
            if sysctl_get(Some(ns), &key).map_err(nl("read IPv6 state in the container"))? != "0" {
                sysctl_set(Some(ns), &key, "0")
                    .map_err(nl(format!("enable IPv6 on {dev} in the container")))?;
            }
        }
    }
    for ip in &plan.ips {
        match cont.add_addr(link.index, ip.address, !conf.enable_dad) {
            Ok(()) | Err(tether_netlink::Error::Exists(_)) => {}
            Err(e) => return Err(nl(format!("add {} to {ifname}", ip.address))(e)),
        }
    }
    cont.set_up(link.index)
        .map_err(nl(format!("set {ifname} up in the container")))?;
    if conf.enable_dad && has_v6 {
        wait_for_dad(cont, link.index, ifname)?;
    }
    for r in &plan.routes {
        let spec = RouteSpec {
            gw: route_gateway(r, &plan.ips),
            oif: Some(link.index),
            metric: r.priority,
            table: r.table,
            scope: r.scope.and_then(|s| u8::try_from(s).ok()),
            mtu: r.mtu,
            advmss: r.advmss,
            // As the reference (Go netlink's default), so `ip route` tells the same story.
            protocol: Some(RTPROT_BOOT),
            ..RouteSpec::new(r.dst)
        };
        match cont.add_route(&spec) {
            Ok(()) | Err(tether_netlink::Error::Exists(_)) => {}
            Err(e) => return Err(nl(format!("add route {spec} in the container"))(e)),
        }
    }
    Ok(())
}

/// With `enabledad`, waits until no IPv6 address of the interface is tentative (polling the
/// kernel, not sleeping a fixed time); a duplicate is an error.
fn wait_for_dad(cont: &NsHandle, idx: u32, ifname: &str) -> Result<(), Error> {
    let deadline = Instant::now() + DAD_TIMEOUT;
    loop {
        let addrs = cont
            .addrs(Some(idx))
            .map_err(nl(format!("list addresses of {ifname}")))?;
        let v6 = addrs.iter().filter(|a| a.net.is_ipv6());
        if let Some(a) = v6.clone().find(|a| a.flags & IFA_F_DADFAILED != 0) {
            return Err(Error::internal(format!(
                "duplicate address detection failed for {} on {ifname}: another host uses it",
                a.net
            )));
        }
        if !v6.clone().any(|a| a.flags & IFA_F_TENTATIVE != 0) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::internal(format!(
                "IPv6 addresses on {ifname} still tentative after {DAD_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ip_forward` / `conf/all/forwarding` for the families that have a gateway on the bridge;
/// written only when not already 1.
fn enable_forwarding(bridge_addrs: &[IpNetwork]) -> Result<(), Error> {
    if bridge_addrs.iter().any(|a| a.is_ipv4()) {
        sysctl_set(None, "net/ipv4/ip_forward", "1").map_err(nl("enable IPv4 forwarding"))?;
    }
    if bridge_addrs.iter().any(|a| a.is_ipv6()) {
        sysctl_set(None, "net/ipv6/conf/all/forwarding", "1")
            .map_err(nl("enable IPv6 forwarding"))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the pieces ADD gathered, put together once
fn build_result(
    conf: &Config,
    req: &Request,
    host: &NsHandle,
    bridge: &Link,
    veth: &Link,
    cont_link: &Link,
    plan: Option<Plan>,
    ipam: Option<CniResult>,
) -> Result<CniResult, Error> {
    // A gateway bridge has its MAC pinned (ensure_bridge), so what we read before is final.
    // Otherwise the MAC may have changed when the first port joined: read it again. (Every
    // lookup is an RTNL round trip, which waits behind whatever else holds the lock.)
    let bridge = if conf.is_gateway {
        bridge.clone()
    } else {
        host.link_by_index(bridge.index)
            .map_err(nl(format!("read bridge {}", conf.bridge)))?
            .unwrap_or_else(|| bridge.clone())
    };
    let iface = |l: &Link, sandbox: Option<String>| Interface {
        name: l.name.clone(),
        mac: l.mac.map(format_mac),
        mtu: Some(l.mtu),
        sandbox,
        ..Default::default()
    };
    let mut result = CniResult {
        cni_version: req.conf.cni_version.clone(),
        interfaces: vec![
            iface(&bridge, None),
            iface(veth, None),
            iface(
                cont_link,
                req.netns.as_ref().map(|p| p.display().to_string()),
            ),
        ],
        ..Default::default()
    };
    if let Some(p) = plan {
        result.ips = p.ips;
        result.routes = p.routes;
    }
    if let Some(r) = ipam {
        result.dns = r.dns;
    }
    if let Some(dns) = &conf.dns {
        result.dns = dns.clone();
    }
    Ok(result)
}

/// Used by CHECK too: the gateway addresses a result implies for the bridge.
pub(crate) fn gateway_addrs(conf: &Config, result: &CniResult) -> Vec<IpNetwork> {
    if !conf.is_gateway {
        return Vec::new();
    }
    result
        .ips
        .iter()
        .filter_map(|i| {
            let gw: IpAddr = i.gateway?;
            IpNetwork::new(gw, i.address.prefix()).ok()
        })
        .collect()
}
