//! The name rules the plugin enforces and the server relies on.

/// A container name or alias: one DNS label of 1 to 63 letters, digits, `-` and `_`, not
/// starting or ending with `-`. `_` is allowed because Podman's generated names have it
/// (`happy_einstein`) and resolvers pass it; a dot, a space or any other byte is refused.
pub fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A search domain: dot-separated labels of letters, digits and `-` (no `_`, no spaces), at most
/// 253 bytes, no leading or trailing dot.
pub fn valid_domain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| valid_label(l) && !l.contains('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_domains_follow_dns_rules() {
        for ok in ["a", "web-1", "happy_einstein", &"x".repeat(63)] {
            assert!(valid_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a.b", "a b", "é", &"x".repeat(64), "a/b"] {
            assert!(!valid_label(bad), "{bad}");
        }
        for ok in ["dns.podman", "dns.tether", "a", "a-b.c"] {
            assert!(valid_domain(ok), "{ok}");
        }
        for bad in ["", "dns podman", "a..b", ".a", "a.", "a_b.c", "a;b"] {
            assert!(!valid_domain(bad), "{bad}");
        }
    }
}
