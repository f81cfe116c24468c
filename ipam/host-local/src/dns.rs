//! `resolvConf`: a resolv.conf file turned into the result's `dns`, as the reference reads it.

use cni::Dns;

/// `nameserver` (one per line), `domain` (the last one wins), `search` and `options` (all words);
/// comments (`#`, `;`), blank lines and other keywords are skipped.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(key), Some(first)) = (words.next(), words.next()) else {
            continue;
        };
        match key {
            // A result's nameservers must be addresses (the next plugin refuses anything
            // else), and a resolver ignores a line that names none.
            "nameserver"
                if first
                    .split('%')
                    .next()
                    .unwrap_or_default()
                    .parse::<std::net::IpAddr>()
                    .is_ok() =>
            {
                dns.nameservers.push(first.to_string())
            }
            "nameserver" => {
                tracing::warn!(
                    nameserver = first,
                    "resolvConf: skipping a nameserver that is not an IP address"
                )
            }
            "domain" => dns.domain = Some(first.to_string()),
            "search" => dns
                .search
                .extend(std::iter::once(first).chain(words).map(String::from)),
            "options" => dns
                .options
                .extend(std::iter::once(first).chain(words).map(String::from)),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_key() {
        let dns = parse_resolv_conf(
            "# comment\n; other comment\nnameserver 10.0.0.53\n  nameserver fd00::53  \n\
             domain a.example\ndomain b.example\nsearch x.example y.example\nsearch z.example\n\
             options ndots:5 edns0\nsortlist 10.0.0.0\nnameserver\nnameserver dns.example\n\
             nameserver fe80::53%eth0\n\n",
        );
        assert_eq!(dns.nameservers, ["10.0.0.53", "fd00::53", "fe80::53%eth0"]);
        assert_eq!(dns.domain.as_deref(), Some("b.example"));
        assert_eq!(dns.search, ["x.example", "y.example", "z.example"]);
        assert_eq!(dns.options, ["ndots:5", "edns0"]);
        assert!(parse_resolv_conf("").is_empty());
    }
}
