//! From the IPAM result to what ADD configures: the reference's `calcGateways` (gateway defaults,
//! the default route, the bridge's gateway addresses) and the container's routes. Pure functions,
//! so the rules are unit-tested without a kernel.

use std::net::IpAddr;

use cni::{CniResult, Error, IpConfig, Route};
use ipnetwork::IpNetwork;

use crate::config::Config;

/// Index of the container interface in the result (`[bridge, host veth, container]`).
pub const CONTAINER_IF_INDEX: usize = 2;

/// What the IPAM result turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The result's `ips`: every one on the container interface, gateways filled in.
    pub ips: Vec<IpConfig>,
    /// The result's `routes`: the IPAM's, plus a default route per family for
    /// `isDefaultGateway`.
    pub routes: Vec<Route>,
    /// Addresses for the bridge (`gateway/prefix`), when `isGateway`.
    pub bridge_addrs: Vec<IpNetwork>,
}

fn is_v4(ip: IpAddr) -> bool {
    ip.is_ipv4()
}

fn default_net(v4: bool) -> IpNetwork {
    if v4 {
        "0.0.0.0/0".parse().expect("static")
    } else {
        "::/0".parse().expect("static")
    }
}

/// The first address after the network address: the reference's `calcGatewayIP`.
fn first_host(addr: &IpNetwork) -> Option<IpAddr> {
    match addr {
        IpNetwork::V4(n) => n
            .network()
            .to_bits()
            .checked_add(1)
            .map(|b| IpAddr::V4(b.into())),
        IpNetwork::V6(n) => n
            .network()
            .to_bits()
            .checked_add(1)
            .map(|b| IpAddr::V6(b.into())),
    }
}

pub fn plan(conf: &Config, ipam: &CniResult) -> Result<Plan, Error> {
    if ipam.ips.is_empty() {
        return Err(Error::internal("IPAM plugin returned missing IP config"));
    }
    let mut ips = Vec::with_capacity(ipam.ips.len());
    let mut routes = ipam.routes.clone();
    let mut bridge_addrs: Vec<IpNetwork> = Vec::new();
    let mut default_done = [false, false]; // [v4, v6]
    for ipc in &ipam.ips {
        let v4 = is_v4(ipc.address.ip());
        let mut gateway = ipc.gateway;
        if let Some(gw) = gateway
            && is_v4(gw) != v4
        {
            return Err(Error::internal(format!(
                "IPAM returned gateway {gw} of the other family for {}",
                ipc.address
            )));
        }
        if gateway.is_none() && conf.is_gateway {
            gateway = first_host(&ipc.address);
        }
        if conf.is_gateway && gateway == Some(ipc.address.ip()) {
            return Err(Error::invalid_config(format!(
                "the container address {} is also its gateway: give the IPAM a range that excludes the gateway",
                ipc.address
            )));
        }
        let fam = usize::from(!v4);
        if conf.is_default_gateway && !default_done[fam] {
            let dflt = default_net(v4);
            let has_default = routes.iter().any(|r| r.gw.is_some() && r.dst == dflt);
            if !has_default {
                routes.push(Route::new(dflt, gateway));
            }
            default_done[fam] = true;
        }
        if conf.is_gateway
            && let Some(gw) = gateway
        {
            let net = IpNetwork::new(gw, ipc.address.prefix())
                .map_err(|e| Error::internal(format!("gateway {gw}: {e}")))?;
            if !bridge_addrs.contains(&net) {
                bridge_addrs.push(net);
            }
        }
        ips.push(IpConfig {
            address: ipc.address,
            gateway,
            interface: Some(CONTAINER_IF_INDEX),
        });
    }
    Ok(Plan {
        ips,
        routes,
        bridge_addrs,
    })
}

/// The gateway a route without `gw` uses inside the container: the first gateway of its family
/// among the addresses (the reference's `ConfigureIface`). `None` makes it a direct route.
pub fn route_gateway(route: &Route, ips: &[IpConfig]) -> Option<IpAddr> {
    route.gw.or_else(|| {
        let v4 = route.dst.is_ipv4();
        ips.iter()
            .filter_map(|i| i.gateway)
            .find(|g| is_v4(*g) == v4)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(is_gw: bool, is_default: bool) -> Config {
        let req = cni::Request::from_env(
            cni::Command::Del,
            &|k| match k {
                "CNI_CONTAINERID" => Some("c".into()),
                "CNI_IFNAME" => Some("eth0".into()),
                _ => None,
            },
            format!(
                r#"{{"cniVersion":"1.0.0","name":"n","type":"bridge","isGateway":{is_gw},"isDefaultGateway":{is_default}}}"#
            )
            .into_bytes(),
        )
        .unwrap();
        Config::parse(&req).unwrap()
    }

    fn ipc(addr: &str, gw: Option<&str>) -> IpConfig {
        IpConfig {
            address: addr.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: None,
        }
    }

    fn result(ips: Vec<IpConfig>, routes: Vec<Route>) -> CniResult {
        CniResult {
            ips,
            routes,
            ..Default::default()
        }
    }

    #[test]
    fn l3_without_gateway_keeps_ipam_data() {
        let r = result(vec![ipc("10.1.0.5/24", Some("10.1.0.1"))], vec![]);
        let p = plan(&conf(false, false), &r).unwrap();
        assert_eq!(p.ips[0].interface, Some(2));
        assert_eq!(p.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert!(p.routes.is_empty());
        assert!(p.bridge_addrs.is_empty());
    }

    #[test]
    fn gateway_defaults_to_first_host_and_goes_on_the_bridge() {
        let r = result(
            vec![ipc("10.1.0.5/24", None), ipc("fd00:1::5/64", None)],
            vec![],
        );
        let p = plan(&conf(true, false), &r).unwrap();
        assert_eq!(p.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(p.ips[1].gateway, Some("fd00:1::1".parse().unwrap()));
        assert_eq!(
            p.bridge_addrs,
            vec![
                "10.1.0.1/24".parse::<IpNetwork>().unwrap(),
                "fd00:1::1/64".parse().unwrap()
            ]
        );
        assert!(p.routes.is_empty());
    }

    #[test]
    fn default_route_once_per_family_unless_ipam_has_one() {
        let r = result(
            vec![
                ipc("10.1.0.5/24", Some("10.1.0.1")),
                ipc("10.2.0.5/24", Some("10.2.0.1")),
                ipc("fd00::5/64", Some("fd00::1")),
            ],
            vec![],
        );
        let p = plan(&conf(true, true), &r).unwrap();
        assert_eq!(
            p.routes,
            vec![
                Route::new(
                    "0.0.0.0/0".parse().unwrap(),
                    Some("10.1.0.1".parse().unwrap())
                ),
                Route::new("::/0".parse().unwrap(), Some("fd00::1".parse().unwrap())),
            ]
        );
        assert_eq!(p.bridge_addrs.len(), 3);

        let ipam_default = Route::new(
            "0.0.0.0/0".parse().unwrap(),
            Some("10.1.0.254".parse().unwrap()),
        );
        let r = result(
            vec![ipc("10.1.0.5/24", Some("10.1.0.1"))],
            vec![ipam_default.clone()],
        );
        let p = plan(&conf(true, true), &r).unwrap();
        assert_eq!(p.routes, vec![ipam_default]);

        // A default route without gw does not count (the reference's rule).
        let r = result(
            vec![ipc("10.1.0.5/24", Some("10.1.0.1"))],
            vec![Route::new("0.0.0.0/0".parse().unwrap(), None)],
        );
        assert_eq!(plan(&conf(true, true), &r).unwrap().routes.len(), 2);
    }

    #[test]
    fn bad_ipam_results() {
        assert!(plan(&conf(true, false), &result(vec![], vec![])).is_err());
        let r = result(vec![ipc("10.1.0.1/24", None)], vec![]);
        assert_eq!(plan(&conf(true, false), &r).unwrap_err().code, 7);
        let r = result(vec![ipc("10.1.0.5/24", Some("fd00::1"))], vec![]);
        assert!(plan(&conf(false, false), &r).is_err());
    }

    #[test]
    fn routes_without_gw_use_the_family_gateway() {
        let ips = vec![
            ipc("10.1.0.5/24", Some("10.1.0.1")),
            ipc("fd00::5/64", None),
        ];
        let r4 = Route::new("192.168.0.0/16".parse().unwrap(), None);
        let r6 = Route::new("fd01::/64".parse().unwrap(), None);
        let r4gw = Route::new(
            "192.168.0.0/16".parse().unwrap(),
            Some("10.1.0.9".parse().unwrap()),
        );
        assert_eq!(route_gateway(&r4, &ips), Some("10.1.0.1".parse().unwrap()));
        assert_eq!(route_gateway(&r6, &ips), None);
        assert_eq!(
            route_gateway(&r4gw, &ips),
            Some("10.1.0.9".parse().unwrap())
        );
    }
}
