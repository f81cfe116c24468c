//! Peak memory of each plugin: every exec goes through the `__rusage` wrapper (see `exec`), so
//! the figure is the plugin's own high-water RSS (with what it execs), not the harness's.
//! `/bin/true` through the same wrapper shows the floor of the method.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use netns_fixtures::Netns;
use serde_json::{Value, json};

use crate::PLUGINS;
use crate::cni::{CNI_VERSION, Ctx, Side, bridge_conf};
use crate::exec;
use crate::scenario::TempDir;
use crate::stats::{max, median};

pub const FLOOR: &str = "/bin/true";

/// (side, what) -> peak RSS samples in KiB. `what` is "bridge ADD/DEL", "host-local VERSION", ...
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub samples: BTreeMap<(String, String), Vec<f64>>,
    pub notes: Vec<String>,
}

impl Memory {
    fn push(&mut self, side: &str, what: String, o: &exec::Outcome) {
        match o.peak_kib {
            Some(k) => self
                .samples
                .entry((side.to_string(), what))
                .or_default()
                .push(k as f64),
            None => self
                .notes
                .push(format!("{side} {what}: the wrapper reported nothing")),
        }
    }

    /// (max, median) in KiB.
    pub fn get(&self, side: &str, what: &str) -> Option<(f64, f64)> {
        let v = self.samples.get(&(side.to_string(), what.to_string()))?;
        Some((max(v), median(v)))
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .samples
            .iter()
            .map(|((side, what), v)| {
                json!({"side": side, "what": what, "max_kib": max(v), "median_kib": median(v), "count": v.len()})
            })
            .collect();
        json!({"rows": rows, "notes": self.notes})
    }
}

fn wrapped(out: &Path, prog: &Path) -> io::Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.args(exec::wrap_args(out, prog)).env_clear();
    Ok(c)
}

/// `containers` ADDs then DELs of bridge + portmap per side, the delegate called directly, and
/// VERSION of every plugin.
pub fn memory(sides: &[Side], work: &Path, containers: usize) -> Memory {
    let mut m = Memory::default();
    let out: PathBuf = work.join("peak-rss");
    for side in sides {
        if let Err(e) = measure_side(side, work, &out, containers, &mut m) {
            m.notes.push(format!("{}: {e}", side.label));
        }
    }
    for _ in 0..5 {
        match wrapped(&out, Path::new(FLOOR)).and_then(|c| exec::run_measured(c, b"", &out)) {
            Ok(o) => m.push("-", FLOOR.to_string(), &o),
            Err(e) => m.notes.push(format!("{FLOOR}: {e}")),
        }
    }
    m
}

fn measure_side(
    side: &Side,
    work: &Path,
    out: &Path,
    containers: usize,
    m: &mut Memory,
) -> io::Result<()> {
    let label = side.label;
    let host = Netns::new()?;
    let data = TempDir::new(work, &format!("memory-{label}"))?;
    let pods: Vec<Netns> = (0..containers)
        .map(|_| Netns::new())
        .collect::<io::Result<_>>()?;
    let ctx = Ctx {
        side,
        host: &host,
        data_dir: &data.0,
        portmap: true,
        log: None,
        peak_out: Some(out),
    };
    let mut results = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let op = ctx.add(i, pod);
        for c in &op.calls {
            m.push(label, format!("{} ADD/DEL", c.plugin), &c.outcome);
        }
        if let Some(e) = &op.error {
            m.notes.push(format!("{label} ADD: {e}"));
        }
        results.push(op.result);
    }
    // The delegate alone, with the stdin bridge hands it.
    let conf = bridge_conf(&data.0);
    for i in 0..containers.min(5) {
        for cmd in ["ADD", "DEL"] {
            let o = ctx.call("host-local", cmd, 900 + i, &pods[0], &conf)?;
            m.push(label, "host-local ADD/DEL (direct)".into(), &o);
        }
    }
    for (i, pod) in pods.iter().enumerate() {
        let op = ctx.del(i, pod, results[i].as_ref());
        for c in &op.calls {
            m.push(label, format!("{} ADD/DEL", c.plugin), &c.outcome);
        }
    }
    let stdin = json!({ "cniVersion": CNI_VERSION }).to_string();
    for p in PLUGINS {
        for _ in 0..5 {
            let mut c = wrapped(out, &side.binary(p))?;
            c.env("CNI_COMMAND", "VERSION");
            let o = exec::run_measured(c, stdin.as_bytes(), out)?;
            m.push(label, format!("{p} VERSION"), &o);
        }
    }
    Ok(())
}
