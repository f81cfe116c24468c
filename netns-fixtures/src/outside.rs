//! An "outside world" namespace routed from the fake host, to observe NAT from the far side.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

use tether_netlink::{IpNetwork, RouteSpec};

use crate::Netns;

/// A namespace reachable from the host over a veth (`outside0` on the host, `eth0` outside),
/// holding the host's default routes.
#[derive(Debug)]
pub struct Outside {
    pub ns: Netns,
    pub host_v4: Ipv4Addr,
    pub outside_v4: Ipv4Addr,
    pub host_v6: Ipv6Addr,
    pub outside_v6: Ipv6Addr,
}

impl Netns {
    /// Connects a new "outside" namespace to this one: 198.51.100.1/24 and 2001:db8:ff::1/64
    /// here, .2 and ::2 outside (no DAD), and default routes here via the outside addresses.
    /// Traffic that leaves the host masqueraded therefore arrives outside from `host_v4`/`host_v6`.
    /// Returns once both ends of the veth are oper-up (see [`Netns::wait_oper_up`]).
    #[track_caller]
    pub fn add_outside(&self) -> Outside {
        let o = Outside {
            ns: Netns::new().unwrap_or_else(|e| panic!("create outside namespace: {e}")),
            host_v4: Ipv4Addr::new(198, 51, 100, 1),
            outside_v4: Ipv4Addr::new(198, 51, 100, 2),
            host_v6: "2001:db8:ff::1".parse().unwrap(),
            outside_v6: "2001:db8:ff::2".parse().unwrap(),
        };
        let step = |what: &str, r: tether_netlink::Result<()>| {
            r.unwrap_or_else(|e| panic!("add_outside: {what}: {e}"))
        };
        let h = self.netlink();
        let out = o.ns.netlink();
        let hi = h
            .create_veth("outside0", None, None, "eth0", o.ns.as_fd(), None, None)
            .unwrap_or_else(|e| panic!("add_outside: veth: {e}"));
        let oi = out
            .link_by_name("eth0")
            .ok()
            .flatten()
            .expect("outside end of the veth")
            .index;
        step("outside link up", out.set_up(oi));
        let net = |ip: std::net::IpAddr, p| IpNetwork::new(ip, p).unwrap();
        step("host v4", h.add_addr(hi, net(o.host_v4.into(), 24), false));
        step("host v6", h.add_addr(hi, net(o.host_v6.into(), 64), true));
        step(
            "outside v4",
            out.add_addr(oi, net(o.outside_v4.into(), 24), false),
        );
        step(
            "outside v6",
            out.add_addr(oi, net(o.outside_v6.into(), 64), true),
        );
        for gw in [o.outside_v4.into(), std::net::IpAddr::from(o.outside_v6)] {
            let any = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
            let spec = RouteSpec {
                gw: Some(gw),
                oif: Some(hi),
                ..RouteSpec::new(any.parse().unwrap())
            };
            step("default route", h.add_route(&spec));
        }
        // Both ends, so the first packet either way gets through.
        self.wait_oper_up(hi);
        o.ns.wait_oper_up(oi);
        o
    }
}
