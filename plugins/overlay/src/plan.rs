//! Pure: from the config and the agent's lease to the delegate's config, and the checks that keep
//! a container off a wrong subnet. No I/O here.
//!
//! ```text
//!  lease.json (agent)                       delegate config (bridge + host-local)
//!  ───────────────────                      ───────────────────────────────────────────
//!  overlay 10.200.0.0/16  ───────────────►  ipam.routes [10.200.0.0/16, 0.0.0.0/0] via gw
//!  subnet  10.200.3.0/24  ───────────────►  ipam.ranges [[{subnet}]], gateway .1 on the bridge
//!  vni 42                 ───────────────►  bridge "tob-42", isGateway
//!  mtu 1450 (or "mtu")    ───────────────►  mtu
//!  <state>/<net>/ipam     ───────────────►  ipam.dataDir (one store per host, any runtime)
//!  network name           ───────────────►  name (host-local's lease dir, the veth records)
//!                                           ipMasq false: the overlay masquerades itself,
//!                                           keyed on the whole overlay (see masq.rs)
//! ```

use std::net::IpAddr;
use std::path::Path;

use ipnetwork::IpNetwork;
use serde_json::{Value, json};
use tether_overlay_state::{HostLease, MAX_VNI, bridge_name};

use crate::config::Config;

/// Why a lease cannot be used: the agent's state is not (yet) what it should be, so the answer
/// is "try again later", never an address from it.
pub fn check_lease(network: &str, lease: &HostLease) -> Result<(), String> {
    if lease.network != network {
        return Err(format!(
            "the lease is for network {:?}, not {network:?}",
            lease.network
        ));
    }
    if lease.vni == 0 || lease.vni > MAX_VNI {
        return Err(format!("VNI {} is out of range 1-{MAX_VNI}", lease.vni));
    }
    let (o, s) = (lease.overlay, lease.subnet);
    if o.is_ipv4() != s.is_ipv4() || !o.contains(s.network()) || s.prefix() < o.prefix() {
        return Err(format!("host subnet {s} is not inside the overlay {o}"));
    }
    if s.ip() != s.network() {
        return Err(format!("host subnet {s} has host bits set"));
    }
    // A gateway and at least one container need two usable addresses.
    let too_small = match s {
        IpNetwork::V4(n) => n.prefix() > 30,
        IpNetwork::V6(n) => n.prefix() > 126,
    };
    if too_small {
        return Err(format!("host subnet {s} is too small"));
    }
    if !(68..=65535).contains(&lease.mtu) {
        return Err(format!("MTU {} is out of range", lease.mtu));
    }
    Ok(())
}

/// The whole overlay as the one destination masquerading skips: what `masquerade_ensure`
/// takes as "an address with its prefix" (its chain is keyed on the network of it).
pub fn masq_key(lease: &HostLease) -> IpNetwork {
    IpNetwork::new(lease.overlay.network(), lease.overlay.prefix())
        .expect("an overlay's own prefix is valid")
}

/// Parts of the runtime's request the delegate gets as they came (its MAC or IP wishes, DNS).
#[derive(Debug, Clone, Default)]
pub struct Passthrough {
    pub cni_version: String,
    pub runtime_config: Option<Value>,
    pub args: Option<Value>,
    pub dns: Option<Value>,
}

impl Passthrough {
    pub fn from_raw(raw: &Value, cni_version: &str) -> Passthrough {
        let get = |k: &str| raw.get(k).filter(|v| !v.is_null()).cloned();
        Passthrough {
            cni_version: cni_version.to_string(),
            runtime_config: get("runtimeConfig"),
            args: get("args"),
            dns: get("dns"),
        }
    }
}

/// The bridge + host-local config for this host's subnet.
pub fn delegate_conf(
    network: &str,
    conf: &Config,
    lease: &HostLease,
    mtu: u32,
    ipam_dir: &Path,
    pass: &Passthrough,
) -> Value {
    let default_route = if lease.subnet.is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    let mut d = json!({
        "cniVersion": pass.cni_version,
        "name": network,
        "type": "bridge",
        "bridge": bridge_name(lease.vni),
        "isGateway": true,
        "ipMasq": false,
        "mtu": mtu,
        "hairpinMode": conf.hairpin_mode,
        "ipam": {
            "type": "host-local",
            "dataDir": ipam_dir.display().to_string(),
            "ranges": [[{ "subnet": lease.subnet.to_string() }]],
            "routes": [
                { "dst": masq_key(lease).to_string() },
                { "dst": default_route },
            ],
        },
    });
    for (key, v) in [
        ("runtimeConfig", &pass.runtime_config),
        ("args", &pass.args),
        ("dns", &pass.dns),
    ] {
        if let Some(v) = v {
            d[key] = v.clone();
        }
    }
    d
}

/// The first address of `ips` outside `subnet`, if any: a result that must not be kept.
pub fn outside_subnet(ips: &[IpAddr], subnet: IpNetwork) -> Option<IpAddr> {
    ips.iter().copied().find(|ip| !subnet.contains(*ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> HostLease {
        crate::fixtures::lease(1450)
    }

    fn conf() -> Config {
        Config::parse(&crate::fixtures::req(
            r#","network":"ov1","hairpinMode":false"#,
        ))
        .unwrap()
    }

    #[test]
    fn the_delegate_is_a_gateway_bridge_on_the_host_subnet_without_its_own_masquerading() {
        let pass = Passthrough {
            cni_version: "1.0.0".into(),
            runtime_config: Some(json!({"mac": "02:00:00:00:00:09"})),
            ..Default::default()
        };
        let d = delegate_conf(
            "ov1",
            &conf(),
            &lease(),
            1400,
            Path::new("/s/ov1/ipam"),
            &pass,
        );
        assert_eq!(
            d,
            json!({
                "cniVersion": "1.0.0", "name": "ov1", "type": "bridge", "bridge": "tob-42",
                "isGateway": true, "ipMasq": false, "mtu": 1400, "hairpinMode": false,
                "ipam": {
                    "type": "host-local", "dataDir": "/s/ov1/ipam",
                    "ranges": [[{"subnet": "10.200.3.0/24"}]],
                    "routes": [{"dst": "10.200.0.0/16"}, {"dst": "0.0.0.0/0"}],
                },
                "runtimeConfig": {"mac": "02:00:00:00:00:09"},
            })
        );
    }

    #[test]
    fn inconsistent_leases_are_refused() {
        check_lease("ov1", &lease()).unwrap();
        let bad = |f: fn(&mut HostLease)| {
            let mut l = lease();
            f(&mut l);
            check_lease("ov1", &l).unwrap_err()
        };
        assert!(bad(|l| l.network = "other".into()).contains("other"));
        assert!(bad(|l| l.vni = 0).contains("VNI"));
        assert!(bad(|l| l.subnet = "10.201.3.0/24".parse().unwrap()).contains("not inside"));
        assert!(bad(|l| l.subnet = "10.200.3.1/24".parse().unwrap()).contains("host bits"));
        assert!(bad(|l| l.subnet = "10.200.3.0/31".parse().unwrap()).contains("too small"));
        assert!(bad(|l| l.mtu = 10).contains("MTU"));
    }

    #[test]
    fn masquerading_is_keyed_on_the_whole_overlay() {
        assert_eq!(masq_key(&lease()).to_string(), "10.200.0.0/16");
        let ips: Vec<IpAddr> = vec!["10.200.3.2".parse().unwrap(), "10.200.4.2".parse().unwrap()];
        assert_eq!(
            outside_subnet(&ips, lease().subnet),
            Some("10.200.4.2".parse().unwrap())
        );
        assert_eq!(outside_subnet(&ips[..1], lease().subnet), None);
    }
}
