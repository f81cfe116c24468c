//! What `network ls` and `network inspect` show of an overlay network: the host subnet the
//! agent leased (`lease.json`) and the peers it programmed (`peers.json`), read from the state
//! directory the agent and the `overlay` plugin share (tether-overlay-state).

use cni::runtime::ConfList;
use serde_json::{Value, json};
use tether_overlay_state::{HostLease, NetworkDir, Peer};

/// An overlay network's local state, as far as it could be read.
#[derive(Debug)]
pub struct OverlayView {
    pub network: String,
    pub dir: Option<NetworkDir>,
    pub lease: Option<HostLease>,
    pub peers: Vec<Peer>,
    /// Why the files could not be read (a bad name, a corrupt file).
    pub error: Option<String>,
}

/// `None` unless `list` is an overlay network.
pub fn overlay_view(list: &ConfList) -> Option<OverlayView> {
    let network = super::overlay_network(list)?.to_string();
    let mut v = OverlayView {
        network: network.clone(),
        dir: None,
        lease: None,
        peers: Vec::new(),
        error: None,
    };
    let dir = match NetworkDir::default_for(&network) {
        Ok(d) => d,
        Err(e) => {
            v.error = Some(e.to_string());
            return Some(v);
        }
    };
    match dir.read_lease() {
        Ok(l) => v.lease = l,
        Err(e) => v.error = Some(e.to_string()),
    }
    match dir.read_peers() {
        Ok(p) => v.peers = p,
        Err(e) => {
            v.error.get_or_insert(e.to_string());
        }
    }
    v.dir = Some(dir);
    Some(v)
}

impl OverlayView {
    /// `network ls`'s SUBNET column: the host subnet, or why there is none.
    pub fn subnet_column(&self) -> String {
        match (&self.lease, &self.error) {
            (Some(l), _) => l.subnet.to_string(),
            (None, Some(_)) => "(unreadable lease)".into(),
            (None, None) => "(no lease)".into(),
        }
    }

    /// `network inspect`'s `overlay` object.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "network": self.network,
            "stateDir": self.dir.as_ref().map(|d| d.path().display().to_string()),
            "hostSubnet": self.lease.as_ref().map(|l| l.subnet.to_string()),
            "lease": self.lease,
            "peers": self.peers,
        });
        if let Some(e) = &self.error {
            v["error"] = json!(e);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_overlay_lists_have_a_view_and_a_missing_lease_says_so() {
        let bridge = super::super::conflist::single("x", "bridge");
        assert!(overlay_view(&bridge).is_none());
        let list = super::super::overlay_conflist("ov-test-no-such", true);
        let v = overlay_view(&list).unwrap();
        assert_eq!(v.network, "ov-test-no-such");
        assert_eq!(v.subnet_column(), "(no lease)");
        assert_eq!(v.to_json()["hostSubnet"], Value::Null);
    }
}
