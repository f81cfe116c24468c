//! `host`: Docker's `--net=host`. The container shares the host's network namespace, so there is
//! nothing to create and nothing to delete; the plugin only makes sure the runtime really means
//! the host's namespace, and reports what is there.
//!
//! - ADD: `CNI_NETNS` must be the namespace this plugin runs in (compared by device and inode, so
//!   any spelling of the path works); any other namespace is refused with code 4. The result lists
//!   the host's interfaces (no `sandbox`), their global addresses, and the default routes.
//! - DEL: nothing, success.
//! - CHECK: the same namespace test as ADD.
//!
//! The reference Go skel refuses exactly this (`CNI_NETNS` equal to the plugin's own namespace,
//! code 8); our skel has no such check. Real orchestrators never call CNI for host networking.
//!
//! [`describe`] is shared with `container`, which reports another namespace the same way.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cni::{CniResult, Error, ErrorCode, Interface, IpConfig, Plugin, Request, Route};
use tether_netlink::{NsHandle, format_mac};

/// The main routing table (`RT_TABLE_MAIN`): where default routes live.
const RT_TABLE_MAIN: u32 = 254;
/// `RT_SCOPE_UNIVERSE`: a global address.
const RT_SCOPE_UNIVERSE: u8 = 0;

pub struct Host;

impl Plugin for Host {
    fn name(&self) -> &'static str {
        "host"
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        let netns = req
            .netns
            .as_deref()
            .expect("the skel requires CNI_NETNS for ADD");
        require_own_netns(netns)?;
        if let Some(prev) = &req.prev_result {
            return Ok(prev.clone());
        }
        let h = NsHandle::current().map_err(Error::internal)?;
        describe(&h, None)
    }

    fn del(&self, _req: &Request) -> Result<(), Error> {
        // Host mode created nothing, so there is nothing to remove, whatever CNI_NETNS says.
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        require_own_netns(
            req.netns
                .as_deref()
                .expect("the skel requires CNI_NETNS for CHECK"),
        )
    }
}

/// Refuses any `CNI_NETNS` other than the namespace this process runs in.
pub fn require_own_netns(netns: &Path) -> Result<(), Error> {
    let own = Path::new("/proc/self/ns/net");
    let same = same_netns(netns, own).map_err(|e| {
        Error::invalid_env(format!("cannot inspect CNI_NETNS {}: {e}", netns.display()))
    })?;
    if !same {
        return Err(Error::new(
            ErrorCode::InvalidEnvironment,
            format!(
                "host mode requires CNI_NETNS to be the host's own network namespace; got {}, which is another namespace",
                netns.display()
            ),
        ));
    }
    Ok(())
}

/// Do two paths name the same namespace? A namespace's identity is the (device, inode) of its
/// nsfs file; paths differ (`/proc/PID/ns/net`, `/run/netns/x`, `/proc/PID/fd/N`) and `stat`
/// follows the magic links to that file.
pub fn same_netns(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// What a namespace already has, as a CNI result: every interface (with `sandbox` when given),
/// the global-scope addresses (no loopback, no link-local) pointing at their interface, and the
/// default routes of the main table.
pub fn describe(h: &NsHandle, sandbox: Option<&str>) -> Result<CniResult, Error> {
    let mut links = h.links().map_err(Error::internal)?;
    links.sort_by_key(|l| l.index);
    let interfaces = links
        .iter()
        .map(|l| Interface {
            name: l.name.clone(),
            mac: Some(format_mac(l.mac.unwrap_or_default())),
            mtu: Some(l.mtu),
            sandbox: sandbox.map(str::to_string),
            ..Default::default()
        })
        .collect();
    let mut ips = Vec::new();
    for a in h.addrs(None).map_err(Error::internal)? {
        if a.scope != RT_SCOPE_UNIVERSE || is_link_local(a.net.ip()) {
            continue;
        }
        ips.push(IpConfig {
            address: a.net,
            gateway: None,
            interface: links.iter().position(|l| l.index == a.index),
        });
    }
    let mut routes = Vec::new();
    for v6 in [false, true] {
        for r in h.routes(v6).map_err(Error::internal)? {
            if r.dst.prefix() == 0 && r.table == Some(RT_TABLE_MAIN) {
                routes.push(Route::new(r.dst, r.gw));
            }
        }
    }
    Ok(CniResult {
        interfaces,
        ips,
        routes,
        ..Default::default()
    })
}

/// Link-local addresses mean nothing outside their link; an admin can still give one global
/// scope, so the address itself is checked too.
fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_by_any_spelling() {
        let own = Path::new("/proc/self/ns/net");
        assert!(same_netns(own, Path::new("/proc/thread-self/ns/net")).unwrap());
        let by_pid = format!("/proc/{}/ns/net", std::process::id());
        require_own_netns(Path::new(&by_pid)).unwrap();
        // Another namespace type of the same process is not our network namespace.
        let e = require_own_netns(Path::new("/proc/self/ns/uts")).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEnvironment as u32);
        assert!(e.msg.contains("/proc/self/ns/uts"), "{}", e.msg);
    }

    #[test]
    fn another_network_namespace_is_refused() {
        let other = netns_fixtures::Netns::new().expect("create a network namespace");
        let e = require_own_netns(&other.path()).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("host's own network namespace"), "{}", e.msg);
    }

    #[test]
    fn link_local_filter() {
        assert!(is_link_local("fe80::1".parse().unwrap()));
        assert!(is_link_local("169.254.3.4".parse().unwrap()));
        assert!(!is_link_local("10.0.0.1".parse().unwrap()));
        assert!(!is_link_local("fd00::1".parse().unwrap()));
    }

    #[test]
    fn describes_a_namespace() {
        let ns = netns_fixtures::Netns::new().expect("create a network namespace");
        let status = ns
            .command("ip")
            .args(["addr", "add", "10.7.0.1/24", "dev", "lo"])
            .status()
            .unwrap();
        assert!(status.success());
        let r = ns.run(|| describe(&NsHandle::current().unwrap(), Some("/x")).unwrap());
        assert_eq!(r.interfaces.len(), 1);
        assert_eq!(r.interfaces[0].name, "lo");
        assert_eq!(r.interfaces[0].sandbox.as_deref(), Some("/x"));
        // 127.0.0.1 and ::1 have host scope; only the global address is reported.
        let addrs: Vec<String> = r.ips.iter().map(|i| i.address.to_string()).collect();
        assert_eq!(addrs, ["10.7.0.1/24"]);
        assert_eq!(r.ips[0].interface, Some(0));
        assert!(r.routes.is_empty());
    }
}
