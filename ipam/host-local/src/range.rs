//! Address ranges and range sets, with the reference host-local's defaults and validation.
//!
//! Addresses are handled as `u128` inside one family so that "next address", sizes and interval
//! overlap are plain integer arithmetic for IPv4 and IPv6 alike.

use crate::Error;
use ipnetwork::IpNetwork;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The integer value of an address (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `v` in the family of `like`.
pub fn from_u128(like: IpAddr, v: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// One pool of addresses: `start..=end` inside `subnet`, with the gateway (never handed out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNetwork,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

/// The range as written in a config, before defaults are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSpec {
    pub subnet: IpNetwork,
    pub start: Option<IpAddr>,
    pub end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

impl Range {
    /// Applies the reference's defaults (gateway and rangeStart = network+1, rangeEnd = last
    /// address, minus the broadcast for IPv4) and validates the result.
    pub fn new(spec: &RangeSpec) -> Result<Range, Error> {
        let subnet = spec.subnet;
        let network = subnet.network();
        if subnet.ip() != network {
            return Err(Error::Config(format!(
                "subnet {subnet} has host bits set: for a prefix of length {} the network address is {network}, so write \"{network}/{}\"",
                subnet.prefix(),
                subnet.prefix()
            )));
        }
        // The reference takes a /0, and hands out addresses like 10.67.0.23/0 with gateway
        // 0.0.0.1: a container whose on-link route is the whole internet.
        if subnet.prefix() == 0 {
            return Err(Error::Config(format!(
                "subnet {subnet} covers every address, so it cannot be one network's subnet: use a prefix of at least /1 (like \"10.1.0.0/16\")"
            )));
        }
        let bits = if subnet.is_ipv4() { 32 } else { 128 };
        // Fewer than 2 host bits leaves nothing to hand out next to the network address and the
        // gateway (the reference rejects the same prefixes).
        if subnet.prefix() > bits - 2 {
            return Err(Error::Config(format!(
                "subnet {subnet} is too small to allocate from: use a prefix of at most /{}",
                bits - 2
            )));
        }
        let first = to_u128(network) + 1;
        let mut last = to_u128(subnet.broadcast());
        if subnet.is_ipv4() {
            last -= 1;
        }
        let inside = |what: &str, ip: IpAddr| -> Result<IpAddr, Error> {
            let ip = ip.to_canonical();
            if ip.is_ipv4() != subnet.is_ipv4() {
                return Err(Error::Config(format!(
                    "{what} {ip} is not the same IP family as subnet {subnet}"
                )));
            }
            if !subnet.contains(ip) {
                return Err(Error::Config(format!(
                    "{what} {ip} is not inside subnet {subnet}"
                )));
            }
            Ok(ip)
        };
        // Beyond the reference, which takes them: the network address (for IPv6 the
        // subnet-router anycast address) and the IPv4 broadcast address are no host's, neither
        // as a gateway nor handed out.
        let host = |what: &str, ip: IpAddr| -> Result<IpAddr, Error> {
            let ip = inside(what, ip)?;
            if ip == network {
                return Err(Error::Config(format!(
                    "{what} {ip} is the network address of subnet {subnet}, not a host address: the first host address is {}",
                    from_u128(network, first)
                )));
            }
            if subnet.is_ipv4() && ip == subnet.broadcast() {
                return Err(Error::Config(format!(
                    "{what} {ip} is the broadcast address of subnet {subnet}, not a host address: the last host address is {}",
                    from_u128(network, last)
                )));
            }
            Ok(ip)
        };
        let gateway = match spec.gateway {
            Some(gw) => host("gateway", gw)?,
            None => from_u128(network, first),
        };
        let start = match spec.start {
            Some(s) => host("rangeStart", s)?,
            None => from_u128(network, first),
        };
        let end = match spec.end {
            Some(e) => host("rangeEnd", e)?,
            None => from_u128(network, last),
        };
        if to_u128(start) > to_u128(end) {
            return Err(Error::Config(format!(
                "rangeStart {start} is after rangeEnd {end} in subnet {subnet}"
            )));
        }
        let r = Range {
            subnet,
            start,
            end,
            gateway,
        };
        if r.capacity() == 0 {
            return Err(Error::Config(format!(
                "range {r} in subnet {subnet} has no usable address: its only address is the gateway"
            )));
        }
        Ok(r)
    }

    pub fn is_ipv4(&self) -> bool {
        self.subnet.is_ipv4()
    }

    /// Is `ip` in `start..=end`?
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// How many addresses this range can hand out (its interval minus its gateway).
    pub fn capacity(&self) -> u128 {
        let size = (to_u128(self.end) - to_u128(self.start)).saturating_add(1);
        size - u128::from(self.contains(self.gateway))
    }

    /// Is `ip` an address this range hands out?
    pub fn allocatable(&self, ip: IpAddr) -> bool {
        self.contains(ip) && ip != self.gateway
    }

    /// The address with this range's prefix, as results carry it.
    pub fn with_prefix(&self, ip: IpAddr) -> IpNetwork {
        IpNetwork::new(ip, self.subnet.prefix()).expect("prefix comes from a valid subnet")
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }
}

impl fmt::Display for Range {
    /// `start-end`, as the reference prints ranges in its messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// A list of disjoint ranges of one family; ADD takes one address from each set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    pub fn new(specs: &[RangeSpec]) -> Result<RangeSet, Error> {
        if specs.is_empty() {
            return Err(Error::Config("empty range set".into()));
        }
        let ranges = specs
            .iter()
            .map(Range::new)
            .collect::<Result<Vec<_>, _>>()?;
        if ranges.iter().any(|r| r.is_ipv4() != ranges[0].is_ipv4()) {
            return Err(Error::Config(
                "mixed address families: all ranges of one range set must be IPv4, or all IPv6 (use a second range set for the other family)".into(),
            ));
        }
        for (i, a) in ranges.iter().enumerate() {
            if let Some(b) = ranges[i + 1..].iter().find(|b| a.overlaps(b)) {
                return Err(Error::Config(format!("ranges {a} and {b} overlap")));
            }
        }
        Ok(RangeSet(ranges))
    }

    pub fn is_ipv4(&self) -> bool {
        self.0[0].is_ipv4()
    }

    /// The range whose `start..=end` holds `ip`.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    /// Is `ip` an address this set hands out (inside a range, not that range's gateway)?
    pub fn allocatable(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some_and(|r| r.allocatable(ip))
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    pub fn capacity(&self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |acc, r| acc.saturating_add(r.capacity()))
    }

    /// Candidate addresses in round-robin order: starting right after `last` when `last` lies in
    /// this set (so a crash-looping container does not get the same address back at once), else
    /// at the first range's start; wrapping across the ranges; skipping each range's gateway;
    /// each address at most once.
    pub fn candidates(&self, last: Option<IpAddr>) -> Candidates<'_> {
        let (range, cur) =
            match last.and_then(|ip| self.0.iter().position(|r| r.contains(ip)).map(|i| (i, ip))) {
                Some((i, ip)) => (i, to_u128(ip)),
                // Pretend the cursor sits on the end of the last range: the first step wraps to the
                // start of range 0.
                None => (self.0.len() - 1, to_u128(self.0[self.0.len() - 1].end)),
            };
        Candidates {
            set: self,
            range,
            cur,
            left: self.0.iter().fold(0u128, |acc, r| {
                acc.saturating_add((to_u128(r.end) - to_u128(r.start)).saturating_add(1))
            }),
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// See [`RangeSet::candidates`]. Yields `(range index, address)`.
pub struct Candidates<'a> {
    set: &'a RangeSet,
    range: usize,
    cur: u128,
    /// Addresses of the whole set not yet stepped over (gateways included).
    left: u128,
}

impl Iterator for Candidates<'_> {
    type Item = (usize, IpAddr);

    fn next(&mut self) -> Option<(usize, IpAddr)> {
        loop {
            if self.left == 0 {
                return None;
            }
            self.left -= 1;
            let r = &self.set.0[self.range];
            if self.cur >= to_u128(r.end) {
                self.range = (self.range + 1) % self.set.0.len();
                self.cur = to_u128(self.set.0[self.range].start);
            } else {
                self.cur += 1;
            }
            let r = &self.set.0[self.range];
            let ip = from_u128(r.start, self.cur);
            if ip != r.gateway {
                return Some((self.range, ip));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: &str) -> RangeSpec {
        RangeSpec {
            subnet: subnet.parse().unwrap(),
            start: None,
            end: None,
            gateway: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_v4_and_v6() {
        let r = Range::new(&spec("10.1.2.0/24")).unwrap();
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.1.2.1"), ip("10.1.2.254"), ip("10.1.2.1"))
        );
        assert_eq!(r.capacity(), 253);
        let r = Range::new(&spec("fd00:1::/120")).unwrap();
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("fd00:1::1"), ip("fd00:1::ff"), ip("fd00:1::1"))
        );
        assert_eq!(r.capacity(), 254);
        // The smallest usable networks.
        assert_eq!(Range::new(&spec("10.0.0.0/30")).unwrap().capacity(), 1);
        assert_eq!(Range::new(&spec("fd00::/126")).unwrap().capacity(), 2);
        // A /64 does not overflow anything.
        assert_eq!(
            Range::new(&spec("fd00::/64")).unwrap().capacity(),
            (1u128 << 64) - 2
        );
    }

    #[test]
    fn explicit_bounds_and_gateway() {
        let r = Range::new(&RangeSpec {
            subnet: "10.1.0.0/16".parse().unwrap(),
            start: Some(ip("10.1.5.10")),
            end: Some(ip("10.1.5.20")),
            gateway: Some(ip("10.1.0.254")),
        })
        .unwrap();
        assert_eq!(r.capacity(), 11);
        assert!(r.allocatable(ip("10.1.5.10")) && !r.allocatable(ip("10.1.5.21")));
        // A v4-mapped spelling is the v4 address.
        let r = Range::new(&RangeSpec {
            start: Some(ip("::ffff:10.1.0.9")),
            ..spec("10.1.0.0/16")
        })
        .unwrap();
        assert_eq!(r.start, ip("10.1.0.9"));
    }

    #[test]
    fn validation_errors() {
        let err = |s: RangeSpec| Range::new(&s).unwrap_err().to_string();
        assert!(err(spec("10.1.2.5/24")).contains("host bits set"));
        assert!(err(spec("10.1.2.5/24")).contains("10.1.2.0/24"));
        for small in ["10.0.0.0/31", "10.0.0.1/32", "fd00::/127", "fd00::1/128"] {
            assert!(err(spec(small)).contains("too small"), "{small}");
        }
        let with = |start: Option<&str>, end: Option<&str>, gw: Option<&str>| RangeSpec {
            subnet: "10.0.0.0/24".parse().unwrap(),
            start: start.map(ip),
            end: end.map(ip),
            gateway: gw.map(ip),
        };
        assert!(
            err(with(Some("10.0.1.1"), None, None)).contains("rangeStart 10.0.1.1 is not inside")
        );
        assert!(err(with(None, Some("10.0.1.1"), None)).contains("rangeEnd"));
        assert!(err(with(None, None, Some("10.9.0.1"))).contains("gateway"));
        assert!(err(with(Some("fd00::1"), None, None)).contains("IP family"));
        assert!(err(with(Some("10.0.0.9"), Some("10.0.0.8"), None)).contains("after rangeEnd"));
        assert!(err(with(Some("10.0.0.1"), Some("10.0.0.1"), None)).contains("no usable address"));
        for every in ["0.0.0.0/0", "::/0"] {
            assert!(err(spec(every)).contains("covers every address"), "{every}");
        }
        // Network and broadcast addresses are no host's.
        assert!(
            err(with(None, None, Some("10.0.0.0")))
                .contains("gateway 10.0.0.0 is the network address of subnet 10.0.0.0/24")
        );
        assert!(
            err(with(None, None, Some("10.0.0.255")))
                .contains("gateway 10.0.0.255 is the broadcast address")
        );
        assert!(
            err(with(Some("10.0.0.0"), None, None)).contains("rangeStart 10.0.0.0 is the network")
        );
        assert!(
            err(with(None, Some("10.0.0.255"), None))
                .contains("rangeEnd 10.0.0.255 is the broadcast")
        );
        let v6 = |gw: &str| RangeSpec {
            gateway: Some(ip(gw)),
            ..spec("fd00::/120")
        };
        assert!(err(v6("fd00::")).contains("network address"));
        // IPv6 has no broadcast: its last address is a host's.
        assert_eq!(Range::new(&v6("fd00::ff")).unwrap().gateway, ip("fd00::ff"));
        // A /1 is large but a subnet.
        assert_eq!(
            Range::new(&spec("128.0.0.0/1")).unwrap().start,
            ip("128.0.0.1")
        );
    }

    #[test]
    fn sets_reject_mixed_families_and_overlaps() {
        let e = RangeSet::new(&[spec("10.0.0.0/24"), spec("fd00::/64")]).unwrap_err();
        assert!(e.to_string().contains("mixed address families"));
        let e = RangeSet::new(&[spec("10.0.0.0/24"), spec("10.0.0.0/25")]).unwrap_err();
        assert!(e.to_string().contains("overlap"));
        assert!(RangeSet::new(&[]).is_err());
        // Disjoint pieces of one subnet are fine.
        let a = RangeSpec {
            start: Some(ip("10.0.0.10")),
            end: Some(ip("10.0.0.19")),
            ..spec("10.0.0.0/24")
        };
        let b = RangeSpec {
            start: Some(ip("10.0.0.20")),
            end: Some(ip("10.0.0.29")),
            ..spec("10.0.0.0/24")
        };
        let set = RangeSet::new(&[a.clone(), b]).unwrap();
        assert_eq!(set.to_string(), "10.0.0.10-10.0.0.19,10.0.0.20-10.0.0.29");
        let other = RangeSet::new(&[a]).unwrap();
        assert!(set.overlaps(&other));
    }

    fn collect(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        set.candidates(last.map(ip))
            .map(|(_, a)| a.to_string())
            .collect()
    }

    #[test]
    fn candidates_round_robin_skip_gateway_and_wrap() {
        let set = RangeSet::new(&[spec("10.0.0.0/29")]).unwrap();
        let all = ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"];
        assert_eq!(collect(&set, None), all);
        assert_eq!(
            collect(&set, Some("10.0.0.4")),
            ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        );
        // A cursor outside the set (e.g. the config changed) starts from the beginning.
        assert_eq!(collect(&set, Some("192.168.0.1")), all);
        // Several ranges: each range's own gateway is skipped, and the walk wraps over all.
        let set = RangeSet::new(&[
            spec("10.0.0.0/30"),
            RangeSpec {
                gateway: Some(ip("10.0.1.2")),
                ..spec("10.0.1.0/30")
            },
        ])
        .unwrap();
        assert_eq!(collect(&set, None), ["10.0.0.2", "10.0.1.1"]);
        assert_eq!(collect(&set, Some("10.0.0.2")), ["10.0.1.1", "10.0.0.2"]);
        assert_eq!(set.capacity(), 2);
        let set = RangeSet::new(&[spec("fd00::/126")]).unwrap();
        assert_eq!(collect(&set, Some("fd00::3")), ["fd00::2", "fd00::3"]);
    }
}
