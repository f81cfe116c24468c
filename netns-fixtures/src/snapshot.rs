//! Normalized pictures of a namespace's network state, for "after DEL equals before ADD".

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tether_netlink::{IFA_F_TEMPORARY, NsHandle};

use crate::Netns;

/// Everything a plugin may leave behind, as sorted text lines per section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `name kind=K master=M up|down`
    pub links: Vec<String>,
    /// `ifname cidr` (without IPv6 link-local and temporary addresses, which the kernel makes)
    pub addrs: Vec<String>,
    /// `dst [via gw] [dev ifname] [metric m] [mtu n] [advmss n] proto p scope s`, main table, v4
    /// and v6, without the kernel's fe80::/64 and ff00::/8 routes
    pub routes: Vec<String>,
    /// `iptables-save` / `ip6tables-save` of nat, filter and mangle, each line prefixed with
    /// `v4 ` or `v6 `, comments and counters removed
    pub iptables: Vec<String>,
    /// `dir-name/relative/path` -> contents, for every file under the dirs given to
    /// [`Netns::snapshot`]
    pub files: BTreeMap<String, String>,
}

impl Netns {
    /// Takes a [`Snapshot`] of this namespace plus the files under `extra_dirs` (missing dirs
    /// count as empty).
    #[track_caller]
    pub fn snapshot(&self, extra_dirs: &[&Path]) -> Snapshot {
        let h = self.netlink();
        let names: BTreeMap<u32, String> = h
            .links()
            .expect("snapshot: list links")
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        let name = |i: u32| names.get(&i).cloned().unwrap_or_else(|| format!("#{i}"));
        Snapshot {
            links: links(&h, &name),
            addrs: addrs(&h, &name),
            routes: routes(&h, &name),
            iptables: iptables(self),
            files: files(extra_dirs),
        }
    }
}

fn links(h: &NsHandle, name: &dyn Fn(u32) -> String) -> Vec<String> {
    let mut out: Vec<String> = h
        .links()
        .expect("snapshot: list links")
        .into_iter()
        .map(|l| {
            format!(
                "{} kind={} master={} {}",
                l.name,
                l.kind.as_deref().unwrap_or("-"),
                l.master.map(name).unwrap_or_else(|| "-".into()),
                if l.up { "up" } else { "down" }
            )
        })
        .collect();
    out.sort();
    out
}

fn addrs(h: &NsHandle, name: &dyn Fn(u32) -> String) -> Vec<String> {
    let mut out: Vec<String> = h
        .addrs(None)
        .expect("snapshot: list addresses")
        .into_iter()
        .filter(|a| match a.net.ip() {
            std::net::IpAddr::V6(ip) => {
                !ip.is_unicast_link_local() && a.flags & IFA_F_TEMPORARY == 0
            }
            std::net::IpAddr::V4(_) => true,
        })
        .map(|a| format!("{} {}", name(a.index), a.net))
        .collect();
    out.sort();
    out
}

fn routes(h: &NsHandle, name: &dyn Fn(u32) -> String) -> Vec<String> {
    const MAIN: Option<u32> = Some(254);
    const RTPROT_KERNEL: u8 = 2;
    let mut out = Vec::new();
    for v6 in [false, true] {
        for r in h.routes(v6).expect("snapshot: list routes") {
            let kernel_v6_noise = r.protocol == RTPROT_KERNEL
                && (r.dst == "fe80::/64".parse().unwrap() || r.dst == "ff00::/8".parse().unwrap());
            if r.table != MAIN || kernel_v6_noise {
                continue;
            }
            let mut line = format!("{}/{}", r.dst.network(), r.dst.prefix());
            if let Some(gw) = r.gw {
                line += &format!(" via {gw}");
            }
            if let Some(oif) = r.oif {
                line += &format!(" dev {}", name(oif));
            }
            if let Some(m) = r.metric {
                line += &format!(" metric {m}");
            }
            if let Some(m) = r.mtu {
                line += &format!(" mtu {m}");
            }
            if let Some(m) = r.advmss {
                line += &format!(" advmss {m}");
            }
            line += &format!(" proto {} scope {}", r.protocol, r.scope.unwrap_or(0));
            out.push(line);
        }
    }
    out.sort();
    out
}

/// Rules keep their order (it matters); only comments and chain counters go.
fn iptables(ns: &Netns) -> Vec<String> {
    let mut out = Vec::new();
    for (fam, tool) in [("v4", "iptables-save"), ("v6", "ip6tables-save")] {
        for table in ["nat", "filter", "mangle"] {
            let o = ns
                .command(tool)
                .args(["-t", table])
                .output()
                .unwrap_or_else(|e| panic!("snapshot: run {tool}: {e}"));
            assert!(
                o.status.success(),
                "snapshot: {tool} -t {table}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                if line.starts_with('#') || line.trim().is_empty() {
                    continue;
                }
                out.push(format!("{fam} {}", strip_counters(line)));
            }
        }
    }
    out
}

/// `:INPUT ACCEPT [12:3456]` -> `:INPUT ACCEPT`; `[1:2] -A ...` (from `-c`) -> `-A ...`.
fn strip_counters(line: &str) -> &str {
    let is_counter = |s: &str| {
        s.starts_with('[')
            && s.ends_with(']')
            && s[1..s.len() - 1]
                .split(':')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let line = match line.split_once(' ') {
        Some((first, rest)) if is_counter(first) => rest,
        _ => line,
    };
    match line.rsplit_once(' ') {
        Some((rest, last)) if line.starts_with(':') && is_counter(last) => rest,
        _ => line,
    }
}

fn files(dirs: &[&Path]) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, label: &str, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, label, out);
            } else {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                let bytes = std::fs::read(&p).unwrap_or_default();
                out.insert(
                    format!("{label}/{}", rel.display()),
                    String::from_utf8_lossy(&bytes).into_owned(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    for d in dirs {
        let label = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| d.display().to_string());
        walk(d, d, &label, &mut out);
    }
    out
}

impl Snapshot {
    /// What changed from `self` to `other`: `- line` was only in `self`, `+ line` only in
    /// `other`, per section. Empty when equal.
    pub fn diff(&self, other: &Snapshot) -> String {
        let mut out = String::new();
        let sections: [(&str, &Vec<String>, &Vec<String>); 4] = [
            ("links", &self.links, &other.links),
            ("addrs", &self.addrs, &other.addrs),
            ("routes", &self.routes, &other.routes),
            ("iptables", &self.iptables, &other.iptables),
        ];
        for (title, a, b) in sections {
            if a == b {
                continue;
            }
            out += &format!("[{title}]\n");
            let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (a.iter().collect(), b.iter().collect());
            for l in a.iter().filter(|l| !sb.contains(l)) {
                out += &format!("- {l}\n");
            }
            for l in b.iter().filter(|l| !sa.contains(l)) {
                out += &format!("+ {l}\n");
            }
            if sa == sb {
                // Same lines, different order (iptables rule order matters).
                out += &format!("  order changed:\n  before: {a:#?}\n  after: {b:#?}\n");
            }
        }
        let keys: BTreeSet<&String> = self.files.keys().chain(other.files.keys()).collect();
        let mut files = String::new();
        for k in keys {
            match (self.files.get(k), other.files.get(k)) {
                (Some(_), None) => files += &format!("- {k}\n"),
                (None, Some(v)) => files += &format!("+ {k}: {v:?}\n"),
                (Some(a), Some(b)) if a != b => files += &format!("~ {k}: {a:?} -> {b:?}\n"),
                _ => {}
            }
        }
        if !files.is_empty() {
            out += "[files]\n";
            out += &files;
        }
        out
    }
}

/// Asserts two snapshots are equal, showing only what differs.
#[track_caller]
pub fn assert_snapshot_eq(before: &Snapshot, after: &Snapshot) {
    if before != after {
        panic!("snapshots differ:\n{}", before.diff(after));
    }
}

/// `assert_snapshot_eq!(before, after)`: [`assert_snapshot_eq`] as a macro, with an optional
/// message.
#[macro_export]
macro_rules! assert_snapshot_eq {
    ($a:expr, $b:expr $(,)?) => {
        $crate::assert_snapshot_eq(&$a, &$b)
    };
    ($a:expr, $b:expr, $($msg:tt)+) => {
        if $a != $b {
            panic!("{}: snapshots differ:\n{}", format!($($msg)+), $a.diff(&$b));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::strip_counters;

    #[test]
    fn counters_are_stripped() {
        assert_eq!(strip_counters(":INPUT ACCEPT [12:3456]"), ":INPUT ACCEPT");
        assert_eq!(strip_counters(":CNI-X - [0:0]"), ":CNI-X -");
        assert_eq!(
            strip_counters("[3:180] -A POSTROUTING -j X"),
            "-A POSTROUTING -j X"
        );
        assert_eq!(
            strip_counters("-A X -m comment --comment \"[1:2]\""),
            "-A X -m comment --comment \"[1:2]\""
        );
    }
}
