//! Parsing of user-facing values: sizes, CPU counts, cpusets, port mappings. Every parser returns a
//! message that names the flag and shows a valid example, and runs before anything is created.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Parses `64m`, `1g`, `512k`, `1024` (bytes), `2GiB`, `64mb`; units are powers of 1024.
pub fn parse_size(flag: &str, s: &str) -> Result<u64> {
    let bad = || {
        Error::usage(format!(
            "invalid size {s:?} for {flag}: use a number with an optional unit b, k, m, g or t (for example 64m or 1g)"
        ))
    };
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// `--cpus 1.5` as a CFS quota over a 100ms period, like Docker.
pub fn parse_cpus(s: &str) -> Result<(u64, u64)> {
    const PERIOD: u64 = 100_000;
    let bad = || {
        Error::usage(format!(
            "invalid value {s:?} for --cpus: use a positive number of CPUs, for example 0.5 or 2"
        ))
    };
    let v: f64 = s.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 {
        return Err(bad());
    }
    let quota = (v * PERIOD as f64).round() as u64;
    // The kernel refuses quotas under 1ms.
    if quota < 1000 {
        return Err(Error::usage(format!(
            "--cpus {s} is too small: the minimum is 0.01"
        )));
    }
    let online = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if v > online {
        return Err(Error::usage(format!(
            "--cpus {s} is more than the {online} CPUs available"
        )));
    }
    Ok((quota, PERIOD))
}

/// Validates a cpuset list such as `0-2,4`.
pub fn parse_cpuset(s: &str) -> Result<String> {
    let bad = || {
        Error::usage(format!(
            "invalid value {s:?} for --cpuset-cpus: use a list of CPU numbers and ranges, for example 0-1,3"
        ))
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    for part in t.split(',') {
        let mut it = part.splitn(2, '-');
        let a: u32 = it.next().unwrap_or("").parse().map_err(|_| bad())?;
        if let Some(b) = it.next() {
            let b: u32 = b.parse().map_err(|_| bad())?;
            if b < a {
                return Err(bad());
            }
        }
    }
    Ok(t.to_string())
}

/// One `-p` mapping, in the shape of the CNI `portMappings` capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// Parses `[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp|sctp]`.
pub fn parse_port(s: &str) -> Result<PortMapping> {
    let bad = |why: &str| {
        Error::usage(format!(
            "invalid port mapping {s:?} for -p ({why}): use [HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO], for example 8080:80 or 127.0.0.1:5353:53/udp"
        ))
    };
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, p.to_ascii_lowercase()),
        None => (s, "tcp".to_string()),
    };
    if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        return Err(bad("the protocol must be tcp, udp or sctp"));
    }
    let (host, cport) = spec
        .rsplit_once(':')
        .ok_or_else(|| bad("no container port"))?;
    let (ip, hport) = match host.rsplit_once(':') {
        Some((ip, p)) => {
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = ip.parse().map_err(|_| bad("bad host IP"))?;
            (Some(ip), p)
        }
        None => (None, host),
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
    Ok(PortMapping {
        host_port: port(hport).ok_or_else(|| bad("bad host port"))?,
        container_port: port(cport).ok_or_else(|| bad("bad container port"))?,
        protocol: proto,
        host_ip: ip,
    })
}

/// Parses a signal by name (`TERM`, `SIGTERM`, `kill`) or number.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    use std::str::FromStr;
    let t = s.trim().to_ascii_uppercase();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| Error::usage(format!("unknown signal number {n}")));
    }
    let name = if t.starts_with("SIG") {
        t
    } else {
        format!("SIG{t}")
    };
    Signal::from_str(&name).map_err(|_| {
        Error::usage(format!(
            "unknown signal {s:?}: use a name such as TERM, KILL, HUP or a number"
        ))
    })
}

/// Formats bytes for humans (`64.0MiB`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("--memory", "64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("--memory", "1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("--memory", "512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("--memory", "2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("--memory", "64mb").unwrap(), 64 << 20);
        assert_eq!(parse_size("--memory", "4096").unwrap(), 4096);
        for bad in [
            "",
            "m",
            "64q",
            "1.5g",
            "-1m",
            "64 m x",
            "99999999999999999999t",
        ] {
            let e = parse_size("--memory", bad).unwrap_err().to_string();
            assert!(e.contains("--memory") && e.contains("64m"), "{bad}: {e}");
        }
    }

    #[test]
    fn cpus_and_cpusets() {
        assert_eq!(parse_cpus("0.5").unwrap(), (50_000, 100_000));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("abc").is_err());
        assert!(parse_cpus("100000").is_err());
        assert_eq!(parse_cpuset("0-1,3").unwrap(), "0-1,3");
        assert!(parse_cpuset("1-0").is_err());
        assert!(parse_cpuset("a").is_err());
    }

    #[test]
    fn ports() {
        let p = parse_port("8080:80").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol.as_str()),
            (8080, 80, "tcp")
        );
        let p = parse_port("127.0.0.1:53:5353/UDP").unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(p.protocol, "udp");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["hostPort"], 53);
        assert_eq!(json["hostIP"], "127.0.0.1");
        for bad in ["80", "a:80", "80:0", "1:2/icmp", "x:1:2"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals() {
        use nix::sys::signal::Signal;
        assert_eq!(parse_signal("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
    }
}
