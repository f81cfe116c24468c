//! What a namespace already has, as a CNI result: for plugins that create nothing and report
//! the namespace they were given (`host`, `container`).

use std::net::IpAddr;

use cni::{CniResult, Error, Interface, IpConfig, Route};
use tether_netlink::{NsHandle, format_mac};

use crate::errors::nl;

/// The main routing table (`RT_TABLE_MAIN`): where default routes live.
const RT_TABLE_MAIN: u32 = 254;
/// `RT_SCOPE_UNIVERSE`: a global address.
const RT_SCOPE_UNIVERSE: u8 = 0;

/// Every interface (with `sandbox` when given), the global-scope addresses (no loopback, no
/// link-local) pointing at their interface, and the default routes of the main table.
pub fn describe(h: &NsHandle, sandbox: Option<&str>) -> Result<CniResult, Error> {
    let mut links = h.links().map_err(nl("list the interfaces"))?;
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
    for a in h.addrs(None).map_err(nl("list the addresses"))? {
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
        for r in h.routes(v6).map_err(nl("list the routes"))? {
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
