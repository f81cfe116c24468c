//! Shared helpers: a throwaway namespace with a `Netfilter` bound to it, and normalized snapshots.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use netns_fixtures::Netns;
use tether_netfilter::{Family, IpNetwork, Netfilter, Tools};

/// Both backends: every behaviour must hold on nf_tables and on legacy.
pub fn backends() -> [(&'static str, Tools); 2] {
    [("nft", Tools::nft()), ("legacy", Tools::legacy())]
}

pub fn ns() -> Netns {
    Netns::new().expect("cannot create a network namespace (tests need root or `unshare -rn`)")
}

pub fn nf(ns: &Netns, tools: &Tools) -> Netfilter {
    Netfilter::new()
        .in_netns(ns)
        .expect("dup netns fd")
        .with_tools(tools.clone())
}

pub fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// `iptables-save -t nat` + `-t filter` run directly in the namespace (not through the library),
/// comments dropped and counters zeroed.
pub fn snapshot(ns: &Netns, tools: &Tools, family: Family) -> String {
    let save = tools.save(family);
    let mut out = String::new();
    for table in ["nat", "filter"] {
        let o = ns.command(save).args(["-t", table]).output().unwrap();
        assert!(
            o.status.success(),
            "{save:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for line in String::from_utf8(o.stdout).unwrap().lines() {
            if line.starts_with('#') {
                continue;
            }
            match (line.starts_with(':'), line.rfind(" [")) {
                (true, Some(i)) => out.push_str(&format!("{} [0:0]", &line[..i])),
                _ => out.push_str(line),
            }
            out.push('\n');
        }
    }
    out
}

/// Both families.
pub fn snapshot_all(ns: &Netns, tools: &Tools) -> String {
    snapshot(ns, tools, Family::V4) + &snapshot(ns, tools, Family::V6)
}

/// Rules that are not ours, so that "exactly as before" also proves we leave others' rules alone.
pub fn foreign_rules(ns: &Netns, tools: &Tools) {
    for (restore, src) in [
        (&tools.v4_restore, "192.0.2.0/24"),
        (&tools.v6_restore, "2001:db8::/64"),
    ] {
        let text = format!(
            "*nat\n:OTHER - [0:0]\n-A OTHER -j RETURN\n\
             -A POSTROUTING -s {src} -m comment --comment \"someone else\" -j OTHER\nCOMMIT\n\
             *filter\n-A FORWARD -s {src} -j ACCEPT\nCOMMIT\n"
        );
        run_restore(ns, restore, &text);
    }
}

pub fn run_restore(ns: &Netns, restore: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut child = ns
        .command(restore)
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{restore:?}: {}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `ip ...` inside the namespace.
pub fn ip(ns: &Netns, args: &str) {
    // Netns::sh panics with the stderr unless the command succeeds.
    ns.sh("ip", &args.split_whitespace().collect::<Vec<_>>());
}

/// A stand-in for one of the tools: counts its calls in `dir/count`; fails the first `failures`
/// calls with `iptables-restore: line 2 failed: <message>` on stderr (exit 4), then runs `real`
/// with the same arguments.
pub fn wrapper(dir: &Path, real: &Path, failures: u32, message: &str) -> PathBuf {
    let path = dir.join("wrapper");
    let count = dir.join("count");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             n=$(cat {count} 2>/dev/null || echo 0)\n\
             echo $((n + 1)) > {count}\n\
             if [ \"$n\" -lt {failures} ]; then\n\
               cat > /dev/null\n\
               echo 'iptables-restore: line 2 failed: {message}' >&2\n\
               exit 4\n\
             fi\n\
             exec {real} \"$@\"\n",
            count = count.display(),
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// How many times the [`wrapper`] in `dir` ran.
pub fn calls(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("count"))
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(0)
}
