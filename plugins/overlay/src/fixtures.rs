//! Unit-test fixtures shared by config.rs and plan.rs: a request carrying a config, and the
//! lease an agent would write.

use cni::Request;
use cni::request::Command;
use tether_overlay_state::HostLease;

/// A DEL request for container c1, eth0, whose config is the minimal one plus `extra` keys
/// (each starting with a comma).
pub fn req(extra: &str) -> Request {
    let env = |k: &str| {
        Some(
            match k {
                "CNI_CONTAINERID" => "c1",
                "CNI_IFNAME" => "eth0",
                _ => return None,
            }
            .to_string(),
        )
    };
    let conf = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"overlay"{extra}}}"#);
    Request::from_env(Command::Del, &env, conf.into_bytes()).unwrap()
}

/// The lease of host subnet 10.200.3.0/24 in overlay 10.200.0.0/16, VNI 42, with `mtu`.
pub fn lease(mtu: u32) -> HostLease {
    HostLease {
        network: "ov1".into(),
        overlay: "10.200.0.0/16".parse().unwrap(),
        subnet: "10.200.3.0/24".parse().unwrap(),
        mtu,
        vni: 42,
        backend: "vxlan".into(),
        public_ip: "192.168.50.2".parse().unwrap(),
        agent_pid: 1,
    }
}
