//! `lo` inside the container's namespace, as the reference loopback plugin handles it
//! (cni-checklist 2.4): up with only loopback addresses, the reference's result, down, checked.
//! Shared by `loopback` and `none`.

use std::path::Path;

use cni::{CniResult, Error, Interface, IpConfig, Request};
use tether_netlink::{IpNetwork, NsHandle};

use crate::errors::nl;
use crate::netns;
use crate::request::RequestExt;

pub const LO: &str = "lo";

/// `lo` has no hardware address; the reference reports it as all zeros.
pub const LO_MAC: &str = "00:00:00:00:00:00";

/// The first address of each family on `lo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoAddrs {
    pub v4: Option<IpNetwork>,
    pub v6: Option<IpNetwork>,
}

/// ADD of a plugin whose whole job is `lo` (loopback, none): `lo` up, then `prevResult`
/// unchanged (a chained plugin must not replace what earlier ones reported) or the reference's
/// `lo` result.
pub fn add(req: &Request) -> Result<CniResult, Error> {
    let netns = req.netns_required()?;
    let addrs = lo_up(netns)?;
    Ok(req
        .prev_result
        .clone()
        .unwrap_or_else(|| lo_result(netns, &addrs)))
}

/// CHECK of such a plugin: `lo` must be up.
pub fn check(req: &Request) -> Result<(), Error> {
    check_lo_up(req.netns_required()?)
}

fn find_lo(h: &NsHandle, netns: &Path) -> Result<tether_netlink::Link, Error> {
    h.link_by_name(LO)
        .map_err(nl(format!("look up {LO} in {}", netns.display())))?
        .ok_or_else(|| Error::internal(format!("no {LO} in {}", netns.display())))
}

/// Sets `lo` up in `netns` and returns its first address of each family. Fails when `lo` carries
/// a non-loopback address, as the reference does: such a namespace is not what the runtime thinks.
pub fn lo_up(netns: &Path) -> Result<LoAddrs, Error> {
    let h = netns::handle(netns)?;
    let lo = find_lo(&h, netns)?;
    h.set_up(lo.index)
        .map_err(nl(format!("set {LO} up in {}", netns.display())))?;
    // Listed after the link is up: the kernel adds ::1 when lo comes up.
    let addrs = h
        .addrs(Some(lo.index))
        .map_err(nl(format!("list the addresses of {LO}")))?;
    if let Some(bad) = addrs.iter().find(|a| !a.net.ip().is_loopback()) {
        return Err(Error::internal(format!(
            "{LO} in {} has the non-loopback address {}",
            netns.display(),
            bad.net
        )));
    }
    let first = |v4: bool| addrs.iter().find(|a| a.net.is_ipv4() == v4).map(|a| a.net);
    let found = LoAddrs {
        v4: first(true),
        v6: first(false),
    };
    tracing::debug!(netns = %netns.display(), ?found, "lo is up");
    Ok(found)
}

/// The reference's result for `lo`: one interface, its first v4 and v6 address on interface 0.
pub fn lo_result(netns: &Path, addrs: &LoAddrs) -> CniResult {
    CniResult {
        interfaces: vec![Interface {
            name: LO.into(),
            mac: Some(LO_MAC.into()),
            sandbox: Some(netns.display().to_string()),
            ..Default::default()
        }],
        ips: [addrs.v4, addrs.v6]
            .into_iter()
            .flatten()
            .map(|address| IpConfig {
                address,
                gateway: None,
                interface: Some(0),
            })
            .collect(),
        ..Default::default()
    }
}

/// Sets `lo` down. A namespace that is already gone is success: DEL must be idempotent, and the
/// runtime may call it after the container died.
pub fn lo_down(netns: &Path) -> Result<(), Error> {
    let Some(fd) = netns::open_existing(netns)? else {
        tracing::debug!(netns = %netns.display(), "namespace already gone");
        return Ok(());
    };
    let h = netns::handle_in(netns, &fd)?;
    let lo = find_lo(&h, netns)?;
    h.set_down(lo.index)
        .map_err(nl(format!("set {LO} down in {}", netns.display())))
}

/// CHECK: `lo` must be up.
pub fn check_lo_up(netns: &Path) -> Result<(), Error> {
    let h = netns::handle(netns)?;
    let lo = find_lo(&h, netns)?;
    if !lo.up {
        return Err(Error::internal(format!(
            "{LO} is down in {}",
            netns.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo_flags_up(ns: &netns_fixtures::Netns) -> bool {
        ns.run(|| {
            let h = NsHandle::current().unwrap();
            h.link_by_name(LO).unwrap().unwrap().up
        })
    }

    #[test]
    fn up_check_down_in_a_namespace() {
        let ns = netns_fixtures::Netns::new().expect("create a network namespace");
        let path = ns.path();
        lo_down(&path).unwrap();
        assert!(!lo_flags_up(&ns));
        assert!(check_lo_up(&path).unwrap_err().msg.contains("down"));
        let addrs = lo_up(&path).unwrap();
        assert!(lo_flags_up(&ns));
        assert_eq!(addrs.v4, Some("127.0.0.1/8".parse().unwrap()));
        assert_eq!(addrs.v6, Some("::1/128".parse().unwrap()));
        check_lo_up(&path).unwrap();
        let r = lo_result(&path, &addrs);
        assert_eq!(r.interfaces[0].sandbox.as_deref(), path.to_str());
        assert_eq!(r.ips.len(), 2);
        assert!(r.ips.iter().all(|ip| ip.interface == Some(0)));
    }

    #[test]
    fn namespace_errors() {
        let gone = Path::new("/run/netns/tether-loopback-test-missing");
        assert_eq!(netns::handle(gone).unwrap_err().code, 3);
        assert_eq!(lo_up(gone).unwrap_err().code, 3);
        assert_eq!(check_lo_up(gone).unwrap_err().code, 3);
        lo_down(gone).unwrap();
        let file = std::env::current_exe().unwrap();
        assert_eq!(netns::handle(&file).unwrap_err().code, 4);
        assert_eq!(lo_up(&file).unwrap_err().code, 4);
        assert_eq!(lo_down(&file).unwrap_err().code, 4);
    }
}
