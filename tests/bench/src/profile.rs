//! `--profile`: where the time of one ADD and one DEL goes.
//!
//! Two views. (1) A timeline of one of our bridge ADDs and DELs from its own debug log
//! (`TETHER_LOG=debug`, timestamps of every event, the delegate's log included), so each phase
//! the plugin logs shows up with its duration. (2) A decomposition that needs no cooperation
//! from the plugin: the whole call against its parts measured separately with the same inputs:
//! exec start-up (VERSION), the host-local delegate called directly, and (ours) the
//! `iptables-restore` batches the plugin logged, replayed in a fresh namespace. What remains is
//! netlink, locking and the plugin's own logic.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use netns_fixtures::Netns;
use serde_json::{Value, json};

use crate::cni::{Ctx, Side, bridge_conf};
use crate::exec::{self, Outcome};
use crate::extra;
use crate::scenario::TempDir;
use crate::stats::median;

const REPS: usize = 15;

/// Wall and CPU samples (ms) of one part.
type WallCpu = (Vec<f64>, Vec<f64>);

#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// (title, lines "offset  delta  event").
    pub timelines: Vec<(String, Vec<String>)>,
    /// side -> part -> (wall samples, cpu samples).
    pub parts: BTreeMap<String, BTreeMap<String, WallCpu>>,
    pub notes: Vec<String>,
    /// The `iptables-restore` inputs of the logged ADD and DEL.
    pub batches: (Vec<String>, Vec<String>),
}

impl Profile {
    fn add(&mut self, side: &str, part: &str, o: &Outcome) {
        let e = self
            .parts
            .entry(side.to_string())
            .or_default()
            .entry(part.to_string())
            .or_default();
        e.0.push(o.wall_ms());
        e.1.push(o.cpu.as_secs_f64() * 1e3);
    }

    pub fn median(&self, side: &str, part: &str) -> Option<(f64, f64)> {
        let (w, c) = self.parts.get(side)?.get(part)?;
        Some((median(w), median(c)))
    }

    pub fn to_json(&self) -> Value {
        let parts: BTreeMap<String, BTreeMap<String, Value>> = self
            .parts
            .iter()
            .map(|(side, m)| {
                let v = m
                    .iter()
                    .map(|(k, (w, c))| {
                        (k.clone(), json!({"median_ms": median(w), "median_cpu_ms": median(c), "samples_ms": w}))
                    })
                    .collect();
                (side.clone(), v)
            })
            .collect();
        json!({"timelines": self.timelines, "parts": parts, "notes": self.notes,
               "batches": {"add": self.batches.0, "del": self.batches.1}})
    }
}

pub const BRIDGE_ADD: &str = "bridge ADD (2nd container)";
pub const BRIDGE_DEL: &str = "bridge DEL";
pub const BRIDGE_START: &str = "bridge start-up (VERSION)";
pub const IPAM_START: &str = "host-local start-up (VERSION)";
pub const IPAM_ADD: &str = "host-local ADD (direct)";
pub const IPAM_DEL: &str = "host-local DEL (direct)";
pub const NFT_ADD: &str = "iptables-restore, ADD batch (replayed)";
pub const NFT_DEL: &str = "iptables-restore, DEL batch (replayed)";

/// `crowded`: also log the ADD and DEL of container number `crowded` on one bridge, to show
/// what grows with the number of containers.
pub fn profile(sides: &[Side], work: &Path, crowded: usize) -> Profile {
    let mut p = Profile::default();
    for at in [2, crowded]
        .into_iter()
        .filter(|&n| n >= 2)
        .collect::<std::collections::BTreeSet<_>>()
    {
        if let Err(e) = timeline(&sides[0], work, at, &mut p) {
            p.notes
                .push(format!("timeline at container {at} failed: {e}"));
        }
    }
    for rep in 0..REPS {
        for side in sides {
            if let Err(e) = decompose(side, work, rep, &mut p) {
                p.notes.push(format!("{}: {e}", side.label));
            }
        }
    }
    p
}

/// The ADD of container number `at` on one bridge (so the bridge exists) and its DEL, logged at
/// debug level. The containers before it are only there to fill the host; dropping their
/// namespaces and the host's at the end frees everything.
fn timeline(side: &Side, work: &Path, at: usize, p: &mut Profile) -> io::Result<()> {
    let host = Netns::new()?;
    let data = TempDir::new(work, "profile-timeline")?;
    let pods: Vec<Netns> = (0..at).map(|_| Netns::new()).collect::<io::Result<_>>()?;
    let mut ctx = Ctx {
        side,
        host: &host,
        data_dir: &data.0,
        portmap: false,
        log: None,
        peak_out: None,
    };
    for (i, pod) in pods[..at - 1].iter().enumerate() {
        if let Some(e) = ctx.add(i, pod).error {
            return Err(io::Error::other(format!("filling the bridge: {e}")));
        }
    }
    ctx.log = Some("debug");
    let add = ctx.add(at - 1, &pods[at - 1]);
    let del = ctx.del(at - 1, &pods[at - 1], add.result.as_ref());
    for (kind, op) in [("ADD", &add), ("DEL", &del)] {
        let Some(call) = op.calls.iter().find(|c| c.plugin == "bridge") else {
            continue;
        };
        let text = String::from_utf8_lossy(&call.outcome.stderr);
        let lines = timeline_lines(
            &text,
            Some((
                secs_of_day(call.outcome.spawned_at),
                secs_of_day(call.outcome.reaped_at),
            )),
        );
        let title = format!(
            "{} bridge {kind}, container {at} on the bridge, TETHER_LOG=debug: {:.1} ms wall \
             (logging included)",
            side.label,
            call.outcome.wall_ms()
        );
        if lines.is_empty() {
            p.notes
                .push(format!("{title}: the plugin logged nothing at debug level"));
        }
        p.timelines.push((title, lines));
        let batches = logged_batches(&text);
        if op.error.is_none() && at == 2 {
            match kind {
                "ADD" => p.batches.0 = batches,
                _ => p.batches.1 = batches,
            }
        }
    }
    if at == 2 && p.batches.0.is_empty() {
        p.notes
            .push("no iptables-restore batch found in the debug log; nothing replayed".into());
    }
    Ok(())
}

/// Seconds since midnight UTC, like [`timestamp`].
fn secs_of_day(t: std::time::SystemTime) -> f64 {
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    d.rem_euclid(86400.0)
}

/// Seconds since midnight of a tracing timestamp (`2026-01-01T12:34:56.789012Z`).
fn timestamp(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?;
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut f = time.split(':');
    let (h, m, s): (f64, f64, f64) = (
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

/// "+offset ms  (+delta)  event" for each timestamped log line, in time order. A delegate's
/// stderr arrives embedded in one event of ours (`stderr=<its log>`) after it finished; its lines
/// carry their own timestamps, so they are split out and put where they happened. `exec` is when
/// the harness spawned and reaped the process (same clock), so start-up and the work after the
/// last event show too.
pub fn timeline_lines(stderr: &str, exec: Option<(f64, f64)>) -> Vec<String> {
    let mut events: Vec<(f64, String)> = Vec::new();
    if let Some((spawned, reaped)) = exec {
        events.push((spawned, "[spawned by the runtime]".into()));
        events.push((reaped, "[exited, reaped by the runtime]".into()));
    }
    for line in stderr.lines() {
        let Some(t) = timestamp(line) else {
            continue;
        };
        let rest = line.split_once(' ').map_or("", |x| x.1).trim();
        match rest.split_once(" stderr=") {
            Some((outer, inner)) if timestamp(inner).is_some() => {
                events.push((t, outer.to_string()));
                let it = timestamp(inner).unwrap_or(t);
                let inner = inner.split_once(' ').map_or("", |x| x.1).trim();
                events.push((it, format!("  (delegate) {inner}")));
            }
            _ => events.push((t, rest.to_string())),
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let t0 = events.first().map_or(0.0, |e| e.0);
    let mut prev = t0;
    events
        .into_iter()
        .map(|(t, text)| {
            let mut text: String = text.chars().take(140).collect();
            if text.chars().count() == 140 {
                text.push('…');
            }
            let line = format!(
                "{:>8.2} ms  (+{:>6.2})  {text}",
                (t - t0) * 1e3,
                (t - prev) * 1e3
            );
            prev = t;
            line
        })
        .collect()
}

/// The `iptables-restore` batches our netfilter layer logged (`batch="..."`, Debug-escaped).
pub fn logged_batches(stderr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in stderr.lines().filter(|l| l.contains("iptables-restore")) {
        let Some(start) = line.find("batch=\"") else {
            continue;
        };
        let mut s = String::new();
        let mut chars = line[start + 7..].chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some(o) => s.push(o),
                    None => {}
                },
                c => s.push(c),
            }
        }
        out.push(s);
    }
    out
}

fn decompose(side: &Side, work: &Path, rep: usize, p: &mut Profile) -> io::Result<()> {
    let label = side.label;
    let host = Netns::new()?;
    let data = TempDir::new(work, &format!("profile-{label}"))?;
    let (c0, c1) = (Netns::new()?, Netns::new()?);
    let ours = label == "ours";
    let ctx = Ctx {
        side,
        host: &host,
        data_dir: &data.0,
        portmap: false,
        log: None,
        peak_out: None,
    };
    let first = ctx.add(0, &c0);
    let add = ctx.add(1, &c1);
    let bridge_call = |op: &crate::cni::Op| op.calls.iter().find(|c| c.plugin == "bridge").cloned();
    let add_call = bridge_call(&add);
    if let Some(c) = &add_call
        && c.outcome.ok()
    {
        p.add(label, BRIDGE_ADD, &c.outcome);
    } else if rep == 0 {
        p.notes
            .push(format!("{label}: ADD failed: {:?}", add.error));
    }

    // The delegate on its own: the same stdin the bridge passes it, its own container id.
    let ipam = bridge_conf(&data.0);
    let o = ctx.call("host-local", "ADD", 900, &c0, &ipam)?;
    if o.ok() {
        p.add(label, IPAM_ADD, &o);
    }
    let o = ctx.call("host-local", "DEL", 900, &c0, &ipam)?;
    if o.ok() {
        p.add(label, IPAM_DEL, &o);
    }

    let del = ctx.del(1, &c1, add.result.as_ref());
    let del_call = bridge_call(&del);
    if let Some(c) = &del_call
        && c.outcome.ok()
    {
        p.add(label, BRIDGE_DEL, &c.outcome);
    }
    ctx.del(0, &c0, first.result.as_ref());

    for (part, plugin) in [(BRIDGE_START, "bridge"), (IPAM_START, "host-local")] {
        let o = extra::version(&side.binary(plugin))?;
        p.add(label, part, &o);
    }

    if ours {
        // Replay what the plugin fed iptables-restore, in a host of its own.
        let replay_host = Netns::new()?;
        let (add_b, del_b) = p.batches.clone();
        let restore = |batch: &str| {
            let mut cmd = replay_host.command("iptables-restore");
            cmd.args(["--noflush", "--wait"]);
            exec::run(cmd, batch.as_bytes())
        };
        for (part, batches) in [(NFT_ADD, &add_b), (NFT_DEL, &del_b)] {
            let mut total: Option<Outcome> = None;
            for b in batches {
                if let Some(setup) = check_prerequisites(b) {
                    // Untimed: what the checks look for, as the plugin found it in place.
                    let o = restore(&setup)?;
                    if !o.ok() && rep == 0 {
                        p.notes.push(format!(
                            "setting up a {part} replay failed: {}",
                            o.failure()
                        ));
                    }
                }
                let o = restore(b)?;
                if !o.ok() && rep == 0 {
                    p.notes
                        .push(format!("replaying a {part} batch failed: {}", o.failure()));
                }
                total = Some(match total {
                    None => o,
                    Some(mut t) => {
                        t.wall += o.wall;
                        t.cpu += o.cpu;
                        t
                    }
                });
            }
            if let Some(t) = total {
                p.add(label, part, &t);
            }
        }
    }
    Ok(())
}

/// For a batch with `-C` lines (the masquerade check of an ADD that finds its chain in place):
/// the batch that makes those checks pass on an empty host, each checked rule appended and its
/// user chains declared. `None` when the batch checks nothing.
fn check_prerequisites(batch: &str) -> Option<String> {
    const BUILTIN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
    let mut out = String::new();
    let mut section: Vec<String> = Vec::new();
    let mut declared: Vec<String> = Vec::new();
    let mut any = false;
    for line in batch.lines() {
        if line.starts_with('*') {
            out.push_str(line);
            out.push('\n');
            section.clear();
            declared.clear();
        } else if line == "COMMIT" {
            for c in &declared {
                out.push_str(&format!(":{c} - [0:0]\n"));
            }
            for rule in &section {
                out.push_str(rule);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        } else if let Some(spec) = line.strip_prefix("-C ") {
            any = true;
            let chain = spec
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            if !BUILTIN.contains(&chain.as_str()) && !declared.contains(&chain) {
                declared.push(chain);
            }
            section.push(format!("-A {spec}"));
        }
    }
    any.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_get_their_rules_set_up_first() {
        let batch = "*nat\n-C TETHER-MASQ-x -d 10.0.0.0/16 -j RETURN\n-C POSTROUTING -s 10.0.0.0/16 -j TETHER-MASQ-x\nCOMMIT\n";
        assert_eq!(
            check_prerequisites(batch).unwrap(),
            "*nat\n:TETHER-MASQ-x - [0:0]\n-A TETHER-MASQ-x -d 10.0.0.0/16 -j RETURN\n\
             -A POSTROUTING -s 10.0.0.0/16 -j TETHER-MASQ-x\nCOMMIT\n"
        );
        assert_eq!(check_prerequisites("*nat\n-A X -j RETURN\nCOMMIT\n"), None);
    }

    #[test]
    fn parses_timeline_and_batches() {
        let log = "2026-01-01T10:00:00.001000Z DEBUG start\n\
                   2026-01-01T10:00:00.003500Z DEBUG iptables-restore family=V4 batch=\"*nat\\n:A - [0:0]\\n-A A -m comment --comment \\\"x y\\\" -j ACCEPT\\nCOMMIT\\n\"\n\
                   not a log line\n";
        let t = timeline_lines(log, None);
        assert_eq!(t.len(), 2);
        assert!(t[1].starts_with("    2.50 ms  (+  2.50)"), "{t:?}");
        let nested = "2026-01-01T10:00:00.009000Z DEBUG plugin stderr plugin=h stderr=2026-01-01T10:00:00.002000Z DEBUG invoked\n\
                      2026-01-01T10:00:00.004000Z DEBUG released\n\
                      2026-01-01T10:00:00.001000Z DEBUG start\n";
        let t = timeline_lines(nested, None);
        assert_eq!(t.len(), 4, "{t:?}");
        assert!(t[0].ends_with("DEBUG start"), "{t:?}");
        assert!(
            t[1].contains("(+  1.00)    (delegate) DEBUG invoked"),
            "{t:?}"
        );
        assert!(
            t[3].starts_with("    8.00 ms") && t[3].ends_with("plugin stderr plugin=h"),
            "{t:?}"
        );
        let t = timeline_lines(nested, Some((36000.0005, 36000.0100)));
        assert_eq!(t.len(), 6, "{t:?}");
        assert!(t[0].ends_with("[spawned by the runtime]"), "{t:?}");
        assert!(
            t[1].starts_with("    0.50 ms  (+  0.50)  DEBUG start"),
            "{t:?}"
        );
        assert!(t[5].starts_with("    9.50 ms  (+  1.00)  [exited"), "{t:?}");
        let b = logged_batches(log);
        assert_eq!(
            b,
            vec!["*nat\n:A - [0:0]\n-A A -m comment --comment \"x y\" -j ACCEPT\nCOMMIT\n"]
        );
    }
}
