//! `loopback`: brings `lo` up in `CNI_NETNS`, exactly as the reference plugin does
//! (cni-checklist 2.4). containerd and CRI-O run it for every pod, some in the 0.1.0/0.2.0 result
//! format, so it answers in every spec version.
//!
//! - ADD: `lo` up; every address on it must be a loopback address. The result is `prevResult`
//!   unchanged when there is one, else `lo` (mac all zeros, sandbox = `CNI_NETNS`) with its first
//!   IPv4 and first IPv6 address (`127.0.0.1/8`, `::1/128` when IPv6 is on), `interface: 0`.
//! - DEL: `lo` down; success when `CNI_NETNS` is empty or no longer exists.
//! - CHECK: `lo` must be up.
//!
//! `CNI_IFNAME` is ignored: this plugin only ever works on `lo`.
//!
//! The functions are public so that `none` (Docker's `--net=none`) can share them.

use std::os::fd::AsFd;
use std::path::Path;

use cni::{CniResult, Error, ErrorCode, Interface, IpConfig, Plugin, Request};
use ipnetwork::IpNetwork;
use tether_netlink::NsHandle;

pub const LO: &str = "lo";

/// `lo` has no hardware address; the reference reports it as all zeros.
pub const LO_MAC: &str = "00:00:00:00:00:00";

pub struct Loopback;

impl Plugin for Loopback {
    fn name(&self) -> &'static str {
        "loopback"
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        let netns = req
            .netns
            .as_deref()
            .expect("the skel requires CNI_NETNS for ADD");
        let addrs = lo_up(netns)?;
        // A chained loopback must not replace what earlier plugins reported.
        Ok(req
            .prev_result
            .clone()
            .unwrap_or_else(|| lo_result(netns, &addrs)))
    }

    fn del(&self, req: &Request) -> Result<(), Error> {
        let Some(netns) = req.netns.as_deref() else {
            tracing::debug!("no CNI_NETNS: nothing to do");
            return Ok(());
        };
        lo_down(netns)
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        check_lo_up(
            req.netns
                .as_deref()
                .expect("the skel requires CNI_NETNS for CHECK"),
        )
    }
}

/// The first address of each family on `lo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoAddrs {
    pub v4: Option<IpNetwork>,
    pub v6: Option<IpNetwork>,
}

/// A netlink handle acting inside the namespace at `netns`. A path that no longer exists means the
/// container is gone (code 3); anything else that is not a network namespace is an invalid
/// `CNI_NETNS` (code 4).
pub fn handle_for(netns: &Path) -> Result<NsHandle, Error> {
    let fd = tether_netlink::open_netns(netns).map_err(|e| netns_error(netns, e))?;
    NsHandle::for_netns(fd.as_fd())
        .map_err(|e| Error::internal(format!("netlink in {}: {e}", netns.display())))
}

fn netns_error(netns: &Path, e: tether_netlink::Error) -> Error {
    match e {
        tether_netlink::Error::NotFound(_) => Error::new(
            ErrorCode::UnknownContainer,
            format!("network namespace {} does not exist", netns.display()),
        ),
        tether_netlink::Error::NotANamespace(_) => Error::invalid_env(format!(
            "CNI_NETNS {} is not a network namespace",
            netns.display()
        )),
        e => Error::internal(e),
    }
}

fn find_lo(h: &NsHandle, netns: &Path) -> Result<tether_netlink::Link, Error> {
    h.link_by_name(LO)
        .map_err(Error::internal)?
        .ok_or_else(|| Error::internal(format!("no {LO} in {}", netns.display())))
}

/// Sets `lo` up in `netns` and returns its first address of each family. Fails when `lo` carries
/// a non-loopback address, as the reference does: such a namespace is not what the runtime thinks.
pub fn lo_up(netns: &Path) -> Result<LoAddrs, Error> {
    let h = handle_for(netns)?;
    let lo = find_lo(&h, netns)?;
    h.set_up(lo.index).map_err(Error::internal)?;
    // Listed after the link is up: the kernel adds ::1 when lo comes up.
    let addrs = h.addrs(Some(lo.index)).map_err(Error::internal)?;
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
    let h = match handle_for(netns) {
        Ok(h) => h,
        Err(e) if e.code == ErrorCode::UnknownContainer as u32 => {
            tracing::debug!(netns = %netns.display(), "namespace already gone");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let lo = find_lo(&h, netns)?;
    h.set_down(lo.index).map_err(Error::internal)
}

/// CHECK: `lo` must be up.
pub fn check_lo_up(netns: &Path) -> Result<(), Error> {
    let h = handle_for(netns)?;
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
        assert_eq!(handle_for(gone).unwrap_err().code, 3);
        lo_down(gone).unwrap();
        let file = std::env::current_exe().unwrap();
        assert_eq!(handle_for(&file).unwrap_err().code, 4);
        assert_eq!(lo_down(&file).unwrap_err().code, 4);
    }
}
