//! Spec versions and their ordering.

/// Every spec version Tether's plugins speak, oldest first.
pub const ALL: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The newest version; used for results and errors when the request names none.
pub const CURRENT: &str = "1.1.0";

/// Parses `MAJOR.MINOR.PATCH`; anything else is `None`.
pub fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let (a, b, c) = (it.next()??, it.next()??, it.next()??);
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

/// `v >= min`; an unparsable `v` is treated as older than anything.
pub fn at_least(v: &str, min: &str) -> bool {
    match (parse(v), parse(min)) {
        (Some(a), Some(b)) => a >= b,
        _ => false,
    }
}

/// Results below 0.3.0 use the `ip4`/`ip6` shape.
pub fn is_legacy_result(v: &str) -> bool {
    !at_least(v, "0.3.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering() {
        assert!(at_least("1.1.0", "0.4.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("x", "0.1.0"));
        assert!(at_least("0.10.0", "0.4.0"));
        assert_eq!(parse("1.0"), None);
        assert_eq!(parse("1.0.0.0"), None);
    }
}
