//! MAC address text form.

/// Parses `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Lowercase, colon-separated: `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = parse_mac("0A:58:0a:00:00:FF").unwrap();
        assert_eq!(m, [0x0a, 0x58, 0x0a, 0, 0, 0xff]);
        assert_eq!(format_mac(m), "0a:58:0a:00:00:ff");
        for bad in [
            "",
            "0a:58:0a:00:00",
            "0a:58:0a:00:00:ff:01",
            "0a:58:0a:00:00:f",
            "0a-58-0a-00-00-ff",
            "+a:58:0a:00:00:ff",
            "zz:58:0a:00:00:ff",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
