//! Plugin start-up (VERSION) and `tether run` end to end.

use std::path::{Path, PathBuf};
use std::process::Command;

use netns_fixtures::Netns;
use serde_json::{Value, json};

use crate::PLUGINS;
use crate::cni::{CNI_VERSION, Side};
use crate::exec;
use crate::scenario::TempDir;
use crate::stats::Summary;

/// Repeated execs of one binary.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub label: String,
    pub side: String,
    pub ms: Vec<f64>,
    pub failures: usize,
    pub first_error: Option<String>,
}

impl Series {
    fn new(label: &str, side: &str) -> Series {
        Series {
            label: label.into(),
            side: side.into(),
            ..Series::default()
        }
    }

    fn push(&mut self, o: &exec::Outcome) {
        self.ms.push(o.wall_ms());
        if !o.ok() {
            self.failures += 1;
            self.first_error.get_or_insert_with(|| o.failure());
        }
    }

    pub fn summary(&self) -> Summary {
        Summary::of(&self.ms, self.ms.iter().sum::<f64>() / 1e3)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "label": self.label, "side": self.side, "summary": self.summary().to_json(),
            "failures": self.failures,
            "first_error": self.first_error, "samples_ms": self.ms,
        })
    }
}

/// `CNI_COMMAND=VERSION` for every plugin of every side, and `/bin/true` as the floor of a
/// fork+exec+wait here, round-robin so that noise spreads evenly.
pub fn startup(sides: &[Side], runs: usize) -> Vec<Series> {
    let mut bins: Vec<(Series, PathBuf)> = Vec::new();
    for side in sides {
        for p in PLUGINS {
            bins.push((Series::new(p, side.label), side.binary(p)));
        }
    }
    bins.push((Series::new("/bin/true", "-"), PathBuf::from("/bin/true")));
    for _ in 0..runs {
        for (series, bin) in bins.iter_mut() {
            match version(bin) {
                Ok(o) => series.push(&o),
                Err(e) => {
                    series.failures += 1;
                    series.first_error.get_or_insert(e.to_string());
                }
            }
        }
    }
    bins.into_iter().map(|(s, _)| s).collect()
}

/// One `CNI_COMMAND=VERSION` exec (no namespace needed: VERSION touches nothing).
pub fn version(bin: &Path) -> std::io::Result<exec::Outcome> {
    let mut c = Command::new(bin);
    c.env_clear().env("CNI_COMMAND", "VERSION");
    let stdin = json!({ "cniVersion": CNI_VERSION }).to_string();
    exec::run(c, stdin.as_bytes())
}

/// End-to-end container runs, or why there are none.
#[derive(Debug, Clone)]
pub enum E2e {
    Skipped(String),
    Measured(Vec<Series>),
}

pub const E2E_MODES: [&str; 3] = ["bridge", "none", "host"];

/// `tether run --rm --net=MODE -- true`, inside a throwaway host netns with a temp root, modes
/// interleaved.
pub fn e2e(tether: &Path, plugins_dir: &Path, work: &Path, runs: usize) -> E2e {
    if !tether.is_file() {
        return E2e::Skipped(format!("{} not found", tether.display()));
    }
    let host = match Netns::new() {
        Ok(h) => h,
        Err(e) => return E2e::Skipped(format!("netns: {e}")),
    };
    let root = match TempDir::new(work, "tether-root") {
        Ok(r) => r,
        Err(e) => return E2e::Skipped(format!("temp root: {e}")),
    };
    let command = |mode: &str| {
        let mut c = host.command(tether);
        c.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("CNI_PATH", plugins_dir)
            .arg("--root")
            .arg(&root.0)
            .args(["run", "--rm", &format!("--net={mode}"), "--", "true"]);
        c
    };
    // One try of each mode first: a runtime that cannot run at all is skipped with its error.
    for mode in E2E_MODES {
        match exec::run(command(mode), b"") {
            Ok(o) if o.ok() => {}
            Ok(o) => {
                return E2e::Skipped(format!("`tether run --net={mode}` failed: {}", o.failure()));
            }
            Err(e) => return E2e::Skipped(format!("exec {}: {e}", tether.display())),
        }
    }
    let mut series: Vec<Series> = E2E_MODES
        .iter()
        .map(|m| Series::new(&format!("--net={m}"), "ours"))
        .collect();
    for _ in 0..runs {
        for (i, mode) in E2E_MODES.iter().enumerate() {
            match exec::run(command(mode), b"") {
                Ok(o) => series[i].push(&o),
                Err(e) => {
                    series[i].failures += 1;
                    series[i].first_error.get_or_insert(e.to_string());
                }
            }
        }
    }
    E2e::Measured(series)
}
