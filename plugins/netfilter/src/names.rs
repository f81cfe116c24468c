//! Names and comments of per-attachment objects (portmap's DNAT chains, firewall rules): found
//! again from `(network, container id, ifname)` alone, never by reading the container.

use sha2::{Digest, Sha256};

use crate::validate::CHAIN_MAX;

/// At most this many hex digits of the hash (80 bits): plenty against collisions.
const HASH_HEX_MAX: usize = 20;

/// `prefix` + the first hex digits of sha256 over `fields` separated by NUL bytes, at most 28
/// characters (iptables' limit). Panics if `prefix` is longer than 16 characters (fewer than 12
/// hex digits would be left): prefixes are constants in our code.
pub(crate) fn hashed_chain_name(prefix: &str, fields: &[&str]) -> String {
    assert!(prefix.len() <= 16, "chain prefix {prefix:?} too long");
    let mut hasher = Sha256::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            // The separator keeps ("ab","c") and ("a","bc") apart.
            hasher.update([0]);
        }
        hasher.update(field);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let n = (CHAIN_MAX - prefix.len()).min(HASH_HEX_MAX);
    format!("{prefix}{}", &hex[..n])
}

/// `prefix` + the first hex digits of sha256("network\0container_id\0ifname"), at most 28
/// characters. Never change it (nor [`comment`]): rules written by older versions must still be
/// found by DEL and GC.
///
/// Panics if `prefix` is longer than 16 characters.
pub fn chain_name(prefix: &str, network: &str, container_id: &str, ifname: &str) -> String {
    hashed_chain_name(prefix, &[network, container_id, ifname])
}

/// The comment on every rule of one attachment: `tether net=<network> id=<cid> if=<ifname>`.
pub fn comment(network: &str, container_id: &str, ifname: &str) -> String {
    format!("tether net={network} id={container_id} if={ifname}")
}

/// Inverse of [`comment`]: `(network, container_id, ifname)`.
pub fn parse_comment(text: &str) -> Option<(&str, &str, &str)> {
    let mut words = text.split(' ');
    if words.next()? != "tether" {
        return None;
    }
    let net = words.next()?.strip_prefix("net=")?;
    let cid = words.next()?.strip_prefix("id=")?;
    let ifname = words.next()?.strip_prefix("if=")?;
    words.next().is_none().then_some((net, cid, ifname))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate;

    const PREFIX: &str = "TETHER-DN-";

    #[test]
    fn names_are_deterministic_and_bounded() {
        let a = chain_name(PREFIX, "net", "cid", "eth0");
        assert_eq!(a, chain_name(PREFIX, "net", "cid", "eth0"));
        assert_eq!(a.len(), 28);
        assert!(a.starts_with(PREFIX));
        validate::chain(&a).unwrap();
        assert_ne!(a, chain_name(PREFIX, "ne", "tcid", "eth0"));
        assert_ne!(a, chain_name(PREFIX, "net", "cid", "eth1"));
        assert_eq!(chain_name("TETHER-", "n", "c", "i").len(), 27);
        // Pinned: changing the hash would orphan every chain already on a host.
        assert_eq!(
            chain_name("TETHER-", "mynet", "abc", "eth0"),
            format!(
                "TETHER-{}",
                &format!("{:x}", Sha256::digest(b"mynet\0abc\0eth0".as_slice()))[..20]
            )
        );
    }

    #[test]
    fn comment_round_trips() {
        let c = comment("my-net.1", "0123abc", "eth0");
        assert_eq!(c, "tether net=my-net.1 id=0123abc if=eth0");
        assert_eq!(parse_comment(&c), Some(("my-net.1", "0123abc", "eth0")));
        assert_eq!(parse_comment("tether net=a id=b"), None);
        assert_eq!(parse_comment("tether net=a id=b if=c extra"), None);
        assert_eq!(parse_comment("tether net=a masq"), None);
        assert_eq!(parse_comment("name: \"a\" id: \"b\""), None);
    }
}
