//! One scenario (N containers on one bridge, k at a time, with or without portmap) on one side:
//! a fresh host netns and a fresh IPAM dataDir, ADD for all N, then DEL for all N, then the
//! leftover check.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netns_fixtures::Netns;
use serde_json::{Value, json};

use crate::clean::{self, Leftovers};
use crate::cni::{Ctx, Op, Side, result_ips};
use crate::floor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub n: usize,
    pub parallel: usize,
    pub portmap: bool,
    pub rounds: usize,
}

impl Spec {
    pub fn label(&self) -> String {
        format!(
            "N={} {}{}",
            self.n,
            if self.parallel > 1 {
                format!("{} at a time", self.parallel)
            } else {
                "sequential".to_string()
            },
            if self.portmap { " +portmap" } else { "" }
        )
    }

    pub fn to_json(self) -> Value {
        json!({"n": self.n, "parallel": self.parallel, "portmap": self.portmap, "rounds": self.rounds})
    }
}

/// Container namespaces, reused across runs: a namespace is empty again after DEL (checked),
/// and reusing them keeps 1000 namespace creations and teardowns (kernel work that competes
/// with the plugins for the RTNL lock) out of the measured phases.
pub struct Pool {
    ns: Vec<Netns>,
}

impl Pool {
    pub fn new() -> Pool {
        Pool { ns: Vec::new() }
    }

    pub fn take(&mut self, n: usize) -> io::Result<&[Netns]> {
        while self.ns.len() < n {
            self.ns.push(Netns::new()?);
        }
        Ok(&self.ns[..n])
    }

    /// Containers among the first `n` that still hold more than `lo`; those are replaced by
    /// fresh namespaces so the next run starts clean.
    pub fn check_and_renew(&mut self, n: usize) -> io::Result<Vec<String>> {
        let mut dirty = Vec::new();
        for i in 0..n.min(self.ns.len()) {
            let names = clean::links(&self.ns[i])?;
            let extra: Vec<String> = names.into_iter().filter(|l| l != "lo").collect();
            if !extra.is_empty() {
                dirty.push(format!(
                    "{}: {}",
                    crate::cni::container_id(i),
                    extra.join(",")
                ));
                self.ns[i] = Netns::new()?;
            }
        }
        Ok(dirty)
    }
}

/// Everything measured for one side of one scenario, over all its rounds.
#[derive(Debug, Clone, Default)]
pub struct SideRun {
    /// Per operation (whole list), in container order, rounds appended.
    pub add_ms: Vec<f64>,
    pub del_ms: Vec<f64>,
    /// Per round, so growth checks look at one bridge at a time.
    pub add_rounds: Vec<Vec<f64>>,
    pub add_wall_s: f64,
    pub del_wall_s: f64,
    /// "bridge ADD" etc. -> exec times.
    pub exec_ms: BTreeMap<String, Vec<f64>>,
    pub add_failures: usize,
    pub del_failures: usize,
    pub errors: Vec<String>,
    pub leftovers: Leftovers,
}

impl SideRun {
    fn record(&mut self, op: &Op, failures: bool) {
        for c in &op.calls {
            self.exec_ms
                .entry(format!("{} {}", c.plugin, c.command))
                .or_default()
                .push(c.outcome.wall_ms());
        }
        if let (Some(e), true) = (&op.error, failures)
            && self.errors.len() < 5
        {
            self.errors.push(e.clone());
        }
    }
}

/// Runs `index` over `0..n` on `k` threads (inline when `k == 1`), results in index order.
fn parallel_map<T: Send>(n: usize, k: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if k <= 1 {
        return (0..n).map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, T)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..k)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break mine;
                        }
                        mine.push((i, f(i)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

/// A directory that is removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(base: &Path, name: &str) -> io::Result<TempDir> {
        let p = base.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One round of `spec` on `side` (a set of plugins, or the kernel floor), accumulated into `run`.
pub fn run_round(
    spec: &Spec,
    side: &Side,
    pool: &mut Pool,
    work: &Path,
    run: &mut SideRun,
) -> io::Result<()> {
    let host = Netns::new()?;
    let data = TempDir::new(work, &format!("ipam-{}", side.label))?;
    let containers = pool.take(spec.n)?;
    let ctx = Ctx {
        side,
        host: &host,
        data_dir: &data.0,
        portmap: spec.portmap,
        log: None,
        peak_out: None,
    };

    let is_floor = side.label == floor::LABEL;
    if is_floor {
        floor::bridge(&host)?;
    }

    let t = Instant::now();
    let adds = parallel_map(spec.n, spec.parallel, |i| {
        if is_floor {
            floor::add(i, &host, &containers[i])
        } else {
            ctx.add(i, &containers[i])
        }
    });
    run.add_wall_s += t.elapsed().as_secs_f64();

    let t = Instant::now();
    let dels = parallel_map(spec.n, spec.parallel, |i| {
        if is_floor {
            floor::del(&containers[i])
        } else {
            ctx.del(i, &containers[i], adds[i].result.as_ref())
        }
    });
    run.del_wall_s += t.elapsed().as_secs_f64();

    let mut round_adds = Vec::with_capacity(spec.n);
    let mut ips = BTreeSet::new();
    for op in &adds {
        round_adds.push(op.wall_ms());
        run.add_ms.push(op.wall_ms());
        run.add_failures += usize::from(op.error.is_some());
        run.record(op, true);
        if let Some(r) = &op.result {
            ips.extend(result_ips(r));
        }
    }
    run.add_rounds.push(round_adds);
    for op in &dels {
        run.del_ms.push(op.wall_ms());
        run.del_failures += usize::from(op.error.is_some());
        run.record(op, true);
    }

    let mut left = clean::check(&host, &data.0, &ips, spec.n);
    left.container_links = pool.check_and_renew(spec.n)?;
    run.leftovers.merge(left);
    drop(host);
    // Let the kernel finish tearing down the old host before the next run starts timing.
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}
