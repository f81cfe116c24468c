//! The names and records that let DEL and GC find what ADD created without the container's netns.

use sha2::{Digest, Sha256};

/// Longest `IFLA_IFALIAS` the kernel stores (IFALIASZ - 1).
const ALIAS_MAX: usize = 255;
const ALIAS_PREFIX: &str = "tether";

/// The host end of the veth pair: `veth` + the first 8 hex digits of
/// sha256(container_id NUL ifname). Deterministic, so DEL finds it from the env alone; the same
/// shape as the reference's random names. The NUL keeps ("ab","c") and ("a","bc") apart.
///
/// Never change this: DEL of attachments created by an older version must find their veth.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::new()
        .chain_update(container_id)
        .chain_update([0])
        .chain_update(ifname)
        .finalize();
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("veth{hex}")
}

/// The record on the host veth (`IFLA_IFALIAS`): `tether:<network>:<container_id>:<ifname>`.
/// Network names and container ids cannot contain `:` (CNI's id rules), nor can interface names,
/// so the record parses back unambiguously. `None` when it would not fit the kernel's limit; that
/// attachment is then invisible to GC (DEL still finds it by name).
pub fn alias(network: &str, container_id: &str, ifname: &str) -> Option<String> {
    let a = format!("{ALIAS_PREFIX}:{network}:{container_id}:{ifname}");
    (a.len() <= ALIAS_MAX).then_some(a)
}

/// Inverse of [`alias`]: `(network, container_id, ifname)`.
pub fn parse_alias(text: &str) -> Option<(&str, &str, &str)> {
    let mut parts = text.split(':');
    if parts.next()? != ALIAS_PREFIX {
        return None;
    }
    let (net, cid, ifname) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && !net.is_empty() && !cid.is_empty() && !ifname.is_empty())
        .then_some((net, cid, ifname))
}

/// What marks a bridge as created by Tether's bridge plugin (its `IFLA_IFALIAS` starts with
/// it): only such a bridge is ever deleted, and only when it has no port left.
pub const BRIDGE_MARK_PREFIX: &str = "tether-bridge:";

/// The mark set on a bridge this plugin creates: `tether-bridge:<network>` (the network that
/// created it, for whoever reads `ip link`). `None` when it would not fit the kernel's limit:
/// that bridge is then left on the host like one we did not create.
pub fn bridge_mark(network: &str) -> Option<String> {
    let m = format!("{BRIDGE_MARK_PREFIX}{network}");
    (m.len() <= ALIAS_MAX).then_some(m)
}

/// Whether a link's alias marks it as a bridge Tether created.
pub fn is_our_bridge(alias: Option<&str>) -> bool {
    alias.is_some_and(|a| a.starts_with(BRIDGE_MARK_PREFIX))
}

/// Per-bridge lock file name component: the bridge name is a valid interface name (no `/`), so
/// it is a valid file name.
pub fn lock_file_name(bridge: &str) -> String {
    format!("bridge-{bridge}.lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_and_valid() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        cni::types::validate_ifname(&a).unwrap();
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(host_veth_name("ab", "ceth0"), host_veth_name("abc", "eth0"));
        // Pinned: changing the hash would orphan every veth already on a host.
        let want = format!(
            "veth{}",
            &format!("{:x}", Sha256::digest(b"abc\0eth0".as_slice()))[..8]
        );
        assert_eq!(a, want);
    }

    #[test]
    fn alias_round_trips() {
        let a = alias("net-1.x", "0123abc", "eth0").unwrap();
        assert_eq!(a, "tether:net-1.x:0123abc:eth0");
        assert_eq!(parse_alias(&a), Some(("net-1.x", "0123abc", "eth0")));
        assert_eq!(parse_alias("tether:a:b"), None);
        assert_eq!(parse_alias("tether:a:b:c:d"), None);
        assert_eq!(parse_alias("other:a:b:c"), None);
        assert_eq!(parse_alias("tether::b:c"), None);
        assert_eq!(alias(&"n".repeat(250), "cid", "eth0"), None);
    }

    #[test]
    fn bridge_marks_name_the_network_and_are_recognised() {
        let m = bridge_mark("net-1").unwrap();
        assert_eq!(m, "tether-bridge:net-1");
        assert!(is_our_bridge(Some(&m)));
        assert!(!is_our_bridge(None));
        assert!(!is_our_bridge(Some("uplink bridge")));
        // A veth's record is not a bridge mark.
        assert!(!is_our_bridge(alias("n", "c", "eth0").as_deref()));
        assert_eq!(bridge_mark(&"n".repeat(250)), None);
    }
}
