//! The printed Markdown (ready for README) and the JSON file.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::PLUGINS;
use crate::cni::Side;
use crate::extra::{E2e, Series};
use crate::machine::Machine;
use crate::memory::{self, Memory};
use crate::profile::{self, Profile};
use crate::scenario::{SideRun, Spec};
use crate::stats::{self, Summary, median, ratio};

pub struct Report<'a> {
    pub machine: &'a Machine,
    pub sides: &'a [Side],
    pub results: &'a [(Spec, Vec<(String, SideRun)>)],
    pub startup: &'a [Series],
    pub memory: &'a Memory,
    pub e2e: &'a E2e,
    pub profile: Option<&'a Profile>,
    pub elapsed_s: f64,
    pub notes: Vec<String>,
}

const OURS: &str = "ours";
const REF: &str = "reference";
const FLOOR: &str = crate::floor::LABEL;
/// What the floor side is, for the printed report and the JSON.
const FLOOR_WHAT: &str = "`floor` is the kernel floor: the kernel objects of one bridge ADD \
     made without any plugin by two `ip -batch -` execs, timed the same way: in the host netns the \
     veth pair (peer straight into the container) and its port on the bridge (up, no IPv6 \
     link-local, as ours), in the container the address (by container index, no IPAM), link up \
     and the default route; DEL is `ip link del eth0` in the container. Netlink only: no \
     iptables and no IPAM, so it runs only without portmap. The container's `arp_notify=1` and \
     `accept_dad=0`, which the plugins set on eth0, come from the namespace's defaults (set \
     untimed), so the gratuitous ARP flooded to every port is in the floor too. Its bridge (MAC \
     pinned, as ours) and gateway address are made before the first ADD, untimed.";
const GROWTH_WINDOW: usize = 100;

fn ms(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn x(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "–".into()
    }
}

fn mib(kib: f64) -> String {
    if kib > 0.0 {
        format!("{:.1}", kib / 1024.0)
    } else {
        "–".into()
    }
}

fn side<'b>(runs: &'b [(String, SideRun)], label: &str) -> Option<&'b SideRun> {
    runs.iter().find(|(l, _)| l == label).map(|(_, r)| r)
}

fn add_summary(r: &SideRun) -> Summary {
    Summary::of(&r.add_ms, r.add_wall_s)
}

fn del_summary(r: &SideRun) -> Summary {
    Summary::of(&r.del_ms, r.del_wall_s)
}

/// Median of the first and the last `GROWTH_WINDOW` ADDs on one bridge, over the rounds.
fn growth(r: &SideRun) -> Option<(f64, f64)> {
    let rounds: Vec<&Vec<f64>> = r
        .add_rounds
        .iter()
        .filter(|v| v.len() >= 2 * GROWTH_WINDOW)
        .collect();
    if rounds.is_empty() {
        return None;
    }
    let first: Vec<f64> = rounds
        .iter()
        .flat_map(|v| v[..GROWTH_WINDOW].iter().copied())
        .collect();
    let last: Vec<f64> = rounds
        .iter()
        .flat_map(|v| v[v.len() - GROWTH_WINDOW..].iter().copied())
        .collect();
    Some((median(&first), median(&last)))
}

fn startup_series<'b>(s: &'b [Series], label: &str, side: &str) -> Option<&'b Series> {
    s.iter().find(|x| x.label == label && x.side == side)
}

impl Report<'_> {
    fn has_ref(&self) -> bool {
        self.sides.iter().any(|s| s.label == REF)
    }

    fn has_floor(&self) -> bool {
        self.results
            .iter()
            .any(|(_, runs)| side(runs, FLOOR).is_some())
    }

    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let m = self.machine;
        let dirs: Vec<String> = self
            .sides
            .iter()
            .map(|s| format!("{}: `{}`", s.label, s.dir.display()))
            .collect();
        let _ = writeln!(o, "### Tether vs reference CNI plugins ({})\n", m.date);
        let _ = writeln!(
            o,
            "Machine: {}, {} cores, kernel {}; commit {}; {}. Run took {:.1} min.\n",
            m.cpu,
            m.cores,
            m.kernel,
            m.commit,
            dirs.join(", "),
            self.elapsed_s / 60.0
        );
        let _ = writeln!(
            o,
            "Each operation is the whole conflist for one container through the real protocol \
             (exec, `CNI_*` env, config on stdin; cniVersion 1.0.0): `bridge` + `host-local` \
             (isGateway, ipMasq), optionally + `portmap` (one port mapping per container, \
             prevResult chained; DEL in reverse with the cached result). Every round runs on a \
             fresh throwaway host netns and IPAM dataDir, ours and reference interleaved. Times in \
             ms; ops/s over the wall-clock of the phase; `ours/ref` = ours ÷ reference (times: \
             lower is better; ops/s: higher is better).\n"
        );
        if self.has_floor() {
            let _ = writeln!(o, "{FLOOR_WHAT}\n");
        }
        for n in &self.notes {
            let _ = writeln!(o, "Note: {n}\n");
        }
        self.scenarios_md(&mut o);
        self.growth_md(&mut o);
        self.memory_md(&mut o);
        self.startup_md(&mut o);
        self.e2e_md(&mut o);
        if self.has_ref() {
            self.targets_md(&mut o);
        }
        self.problems_md(&mut o);
        if let Some(p) = self.profile {
            self.profile_md(p, &mut o);
        }
        o
    }

    fn scenarios_md(&self, o: &mut String) {
        if self.results.is_empty() {
            return;
        }
        let _ = writeln!(o, "#### ADD and DEL, per operation\n");
        let _ = writeln!(
            o,
            "| scenario | op | side | min | median | p90 | p99 | ops/s | failures | leftovers |"
        );
        let _ = writeln!(o, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|");
        for (spec, runs) in self.results {
            let label = if spec.rounds > 1 {
                format!("{} (×{} rounds)", spec.label(), spec.rounds)
            } else {
                spec.label()
            };
            for (op, summarise) in [
                ("ADD", add_summary as fn(&SideRun) -> Summary),
                ("DEL", del_summary),
            ] {
                let mut first = true;
                for (l, r) in runs {
                    let s = summarise(r);
                    let fails = if op == "ADD" {
                        r.add_failures
                    } else {
                        r.del_failures
                    };
                    let left = if op == "DEL" {
                        r.leftovers.total().to_string()
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        o,
                        "| {} | {} | {l} | {} | {} | {} | {} | {:.1} | {fails} | {left} |",
                        if first { label.as_str() } else { "" },
                        if first { op } else { "" },
                        ms(s.min),
                        ms(s.median),
                        ms(s.p90),
                        ms(s.p99),
                        s.ops_per_s
                    );
                    first = false;
                }
                for (other, name) in [(REF, "**ours/ref**"), (FLOOR, "ours/floor")] {
                    let (Some(a), Some(b)) = (side(runs, OURS), side(runs, other)) else {
                        continue;
                    };
                    let (a, b) = (summarise(a), summarise(b));
                    let _ = writeln!(
                        o,
                        "| | | {name} | {} | **{}** | {} | {} | **{}** | | |",
                        x(ratio(a.min, b.min)),
                        x(ratio(a.median, b.median)),
                        x(ratio(a.p90, b.p90)),
                        x(ratio(a.p99, b.p99)),
                        x(ratio(a.ops_per_s, b.ops_per_s))
                    );
                }
            }
        }
        let _ = writeln!(o);
    }

    fn growth_md(&self, o: &mut String) {
        let rows: Vec<String> = self
            .results
            .iter()
            .flat_map(|(spec, runs)| {
                runs.iter().filter_map(move |(l, r)| {
                    growth(r).map(|(f, la)| {
                        format!(
                            "| {} | {l} | {} | {} | **{}** |",
                            spec.label(),
                            ms(f),
                            ms(la),
                            x(ratio(la, f))
                        )
                    })
                })
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            o,
            "#### Growth: ADD median of the first vs the last {GROWTH_WINDOW} containers on one bridge\n"
        );
        let _ = writeln!(
            o,
            "| scenario | side | first {GROWTH_WINDOW} | last {GROWTH_WINDOW} | last/first |"
        );
        let _ = writeln!(o, "|---|---|--:|--:|--:|");
        for r in rows {
            let _ = writeln!(o, "{r}");
        }
        let _ = writeln!(o);
    }

    fn memory_md(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "#### Peak memory (MiB, max RSS; ADD/DEL include what the plugin execs: the IPAM \
             delegate, iptables)\n"
        );
        let mut head = String::from("| plugin |");
        let mut sep = String::from("|---|");
        for s in self.sides {
            let _ = write!(
                head,
                " {0} ADD/DEL max | {0} median | {0} VERSION |",
                s.label
            );
            sep.push_str("--:|--:|--:|");
        }
        let _ = writeln!(o, "{head}\n{sep}");
        for p in PLUGINS {
            let mut row = format!("| {p} |");
            for s in self.sides {
                let what = if p == "host-local" {
                    "host-local ADD/DEL (direct)".to_string()
                } else {
                    format!("{p} ADD/DEL")
                };
                let (mx, md) = self.memory.get(s.label, &what).unwrap_or((0.0, 0.0));
                let version = self
                    .memory
                    .get(s.label, &format!("{p} VERSION"))
                    .map_or(0.0, |v| v.0);
                let _ = write!(row, " {} | {} | {} |", mib(mx), mib(md), mib(version));
            }
            let _ = writeln!(o, "{row}");
        }
        let floor = self.memory.get("-", memory::FLOOR).map_or(0.0, |v| v.0);
        let _ = writeln!(
            o,
            "\nEvery exec measured through a small wrapper process (the harness's own size \
             would otherwise leak into `ru_maxrss`); `/bin/true` through it: {} MiB. host-local \
             called directly with the stdin bridge gives it.\n",
            mib(floor)
        );
        for n in &self.memory.notes {
            let _ = writeln!(o, "- note: {n}");
        }
    }

    fn startup_md(&self, o: &mut String) {
        let Some(t) = startup_series(self.startup, "/bin/true", "-") else {
            return;
        };
        let truth = median(&t.ms);
        let _ = writeln!(
            o,
            "#### Start-up: `CNI_COMMAND=VERSION`, median of {} execs (fork+exec+wait from here)\n",
            t.ms.len()
        );
        let _ = writeln!(
            o,
            "| binary | ours | reference | ours/ref | ours − /bin/true |\n|---|--:|--:|--:|--:|"
        );
        for p in PLUGINS {
            let a = startup_series(self.startup, p, OURS).map_or(f64::NAN, |s| median(&s.ms));
            let b = startup_series(self.startup, p, REF).map_or(f64::NAN, |s| median(&s.ms));
            let _ = writeln!(
                o,
                "| {p} | {} | {} | {} | {} |",
                ms(a),
                ms(b),
                x(ratio(a, b)),
                ms(a - truth)
            );
        }
        let _ = writeln!(o, "| /bin/true | {} | | | |\n", ms(truth));
    }

    fn e2e_md(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "#### End to end: `tether run --rm --net=MODE -- true` (in a throwaway host netns)\n"
        );
        match self.e2e {
            E2e::Skipped(why) => {
                let _ = writeln!(o, "Not measured: {why}.\n");
            }
            E2e::Measured(series) => {
                let _ = writeln!(
                    o,
                    "| mode | min | median | p90 | runs | failures |\n|---|--:|--:|--:|--:|--:|"
                );
                for s in series {
                    let v = s.summary();
                    let _ = writeln!(
                        o,
                        "| {} | {} | **{}** | {} | {} | {} |",
                        s.label,
                        ms(v.min),
                        ms(v.median),
                        ms(v.p90),
                        v.count,
                        s.failures
                    );
                }
                let _ = writeln!(o);
            }
        }
    }

    fn find(&self, f: impl Fn(&Spec) -> bool) -> Vec<(&Spec, &SideRun, &SideRun)> {
        self.results
            .iter()
            .filter(|(s, _)| f(s))
            .filter_map(|(s, runs)| Some((s, side(runs, OURS)?, side(runs, REF)?)))
            .collect()
    }

    /// Each target of the issue with the figure from this run.
    fn targets(&self) -> Vec<(String, String, Option<bool>)> {
        let mut t = Vec::new();
        let worst = |v: Vec<f64>, max: bool| -> f64 {
            v.into_iter()
                .filter(|x| x.is_finite())
                .fold(f64::NAN, |a, b| {
                    if a.is_nan() {
                        b
                    } else if max {
                        a.max(b)
                    } else {
                        a.min(b)
                    }
                })
        };
        // (name, formatted value, met: `v ≤ limit` when `le`, else `v ≥ limit`)
        let row = |name: &str, v: f64, limit: f64, le: bool, fmt: &dyn Fn(f64) -> String| {
            let ok = v
                .is_finite()
                .then_some(if le { v <= limit } else { v >= limit });
            (name.to_string(), fmt(v), ok)
        };
        let seq_plain = self.find(|s| s.parallel == 1 && !s.portmap);
        let one: Vec<f64> = seq_plain
            .iter()
            .filter(|(s, ..)| s.n == 1)
            .map(|(_, a, b)| ratio(median(&a.add_ms), median(&b.add_ms)))
            .collect();
        t.push(row(
            "bridge ADD, 1 container ≤ 0.4× ref",
            worst(one, true),
            0.4,
            true,
            &|v| format!("{}×", x(v)),
        ));
        let big = seq_plain.iter().max_by_key(|(s, ..)| s.n);
        if let Some((s, a, b)) = big.filter(|(s, ..)| s.n >= 2 * GROWTH_WINDOW) {
            let (ga, gb) = (growth(a), growth(b));
            let last = ratio(ga.map_or(f64::NAN, |g| g.1), gb.map_or(f64::NAN, |g| g.1));
            t.push(row(
                &format!("bridge ADD, last {GROWTH_WINDOW} of {} ≤ 0.25× ref", s.n),
                last,
                0.25,
                true,
                &|v| format!("{}×", x(v)),
            ));
            let g = ga.map_or(f64::NAN, |(f, l)| ratio(l, f));
            t.push(row(
                &format!("ours: ADD last/first {GROWTH_WINDOW} of {} ≤ 1.3", s.n),
                g,
                1.3,
                true,
                &x,
            ));
            // Not a target: how much of that growth the kernel shows for the same objects.
            let floor = self
                .results
                .iter()
                .find(|(spec, _)| spec == *s)
                .and_then(|(_, runs)| growth(side(runs, FLOOR)?));
            if let Some((f, l)) = floor {
                t.push((
                    format!(
                        "ADD last/first {GROWTH_WINDOW} of {}: ours vs kernel floor (the kernel's own growth)",
                        s.n
                    ),
                    format!("{}× vs {}×", x(g), x(ratio(l, f))),
                    None,
                ));
            }
        }
        let del: Vec<f64> = seq_plain
            .iter()
            .map(|(_, a, b)| ratio(median(&a.del_ms), median(&b.del_ms)))
            .collect();
        t.push(row(
            "bridge DEL ≤ 0.4× ref (worst scenario)",
            worst(del, true),
            0.4,
            true,
            &|v| format!("{}×", x(v)),
        ));
        let pm = self.find(|s| s.parallel == 1 && s.portmap);
        for (op, get) in [
            (
                "ADD",
                (|r: &SideRun| median(&r.add_ms)) as fn(&SideRun) -> f64,
            ),
            ("DEL", |r: &SideRun| median(&r.del_ms)),
        ] {
            let v: Vec<f64> = pm.iter().map(|(_, a, b)| ratio(get(a), get(b))).collect();
            t.push(row(
                &format!("bridge+portmap {op} ≤ 0.25× ref (worst scenario)"),
                worst(v, true),
                0.25,
                true,
                &|v| format!("{}×", x(v)),
            ));
        }
        let par = self.find(|s| s.parallel > 1);
        if !par.is_empty() {
            let bad: usize = par
                .iter()
                .map(|(_, a, _)| a.add_failures + a.del_failures + a.leftovers.total())
                .sum();
            t.push(row(
                "ours, 8 at a time: failures + leftovers = 0",
                bad as f64,
                0.0,
                true,
                &|v| format!("{v:.0}"),
            ));
            let mut v = Vec::new();
            for (_, a, b) in &par {
                v.push(ratio(add_summary(a).ops_per_s, add_summary(b).ops_per_s));
                v.push(ratio(del_summary(a).ops_per_s, del_summary(b).ops_per_s));
            }
            t.push(row(
                "8 at a time: ops/s ≥ 2× ref (worst of ADD, DEL)",
                worst(v, false),
                2.0,
                false,
                &|v| format!("{}×", x(v)),
            ));
        }
        let start: Vec<f64> = PLUGINS
            .iter()
            .filter_map(|p| startup_series(self.startup, p, OURS))
            .map(|s| median(&s.ms))
            .collect();
        t.push(row(
            "start-up (VERSION) ≤ 1.5 ms (slowest plugin)",
            worst(start, true),
            1.5,
            true,
            &|v| format!("{} ms", ms(v)),
        ));
        let mem: Vec<f64> = self
            .memory
            .samples
            .iter()
            .filter(|((side, _), _)| side == OURS)
            .map(|(_, v)| stats::max(v) / 1024.0)
            .collect();
        t.push(row(
            "peak memory ≤ 8 MiB (largest plugin)",
            worst(mem, true),
            8.0,
            true,
            &|v| format!("{v:.1} MiB"),
        ));
        if let E2e::Measured(series) = self.e2e
            && let Some(s) = series.iter().find(|s| s.label == "--net=bridge")
        {
            t.push(row(
                "`tether run --net=bridge` < 60 ms",
                median(&s.ms),
                60.0,
                true,
                &|v| format!("{} ms", ms(v)),
            ));
        }
        t
    }

    fn targets_md(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "#### Targets (issue 5)\n\n| target | this run | met |\n|---|--:|:-:|"
        );
        for (name, value, ok) in self.targets() {
            let mark = match ok {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            let _ = writeln!(o, "| {name} | {value} | {mark} |");
        }
        let _ = writeln!(o);
    }

    fn problems_md(&self, o: &mut String) {
        let mut lines = Vec::new();
        for (spec, runs) in self.results {
            for (l, r) in runs {
                for e in &r.errors {
                    lines.push(format!("- {} {l}: {e}", spec.label()));
                }
                if r.leftovers.total() > 0 {
                    lines.push(format!(
                        "- {} {l}: {} leftovers: {}",
                        spec.label(),
                        r.leftovers.total(),
                        r.leftovers.describe(6)
                    ));
                }
            }
        }
        for s in self.startup {
            if let Some(e) = &s.first_error {
                lines.push(format!("- VERSION {} {}: {e}", s.side, s.label));
            }
        }
        if lines.is_empty() {
            let _ = writeln!(o, "No failures, no leftovers.\n");
        } else {
            let _ = writeln!(o, "#### Failures and leftovers (first few)\n");
            for l in lines {
                let _ = writeln!(o, "{l}");
            }
            let _ = writeln!(o);
        }
    }

    fn profile_md(&self, p: &Profile, o: &mut String) {
        let _ = writeln!(
            o,
            "#### Profile: one ADD and one DEL (2nd container on the bridge)\n"
        );
        let mut head = String::from("| part |");
        let mut sep = String::from("|---|");
        let labels: Vec<&str> = self.sides.iter().map(|s| s.label).collect();
        for l in &labels {
            let _ = write!(head, " {l} wall | {l} CPU |");
            sep.push_str("--:|--:|");
        }
        let _ = writeln!(o, "{head}\n{sep}");
        let parts = [
            profile::BRIDGE_ADD,
            profile::BRIDGE_START,
            profile::IPAM_START,
            profile::IPAM_ADD,
            profile::NFT_ADD,
            "rest of ADD",
            profile::BRIDGE_DEL,
            profile::IPAM_DEL,
            profile::NFT_DEL,
            "rest of DEL",
        ];
        for part in parts {
            let mut row = format!("| {part} |");
            for l in &labels {
                let v = match part {
                    "rest of ADD" => rest(
                        p,
                        l,
                        profile::BRIDGE_ADD,
                        profile::IPAM_ADD,
                        profile::NFT_ADD,
                    ),
                    "rest of DEL" => rest(
                        p,
                        l,
                        profile::BRIDGE_DEL,
                        profile::IPAM_DEL,
                        profile::NFT_DEL,
                    ),
                    _ => p.median(l, part),
                };
                let (w, c) = v.unwrap_or((f64::NAN, f64::NAN));
                let _ = write!(row, " {} | {} |", ms(w), ms(c));
            }
            let _ = writeln!(o, "{row}");
        }
        let _ = writeln!(
            o,
            "\nMedians of {} repetitions, each on a fresh host. CPU = user+sys of the process and \
             what it execs. `rest` = the whole call minus the delegate and the replayed \
             iptables-restore batches (ours; for the reference it still holds its iptables \
             execs): the plugin's own start-up, netlink, locks and waits.\n",
            p.parts
                .values()
                .next()
                .and_then(|m| m.values().next())
                .map_or(0, |v| v.0.len())
        );
        for (title, lines) in &p.timelines {
            let _ = writeln!(o, "{title}:\n\n```");
            for l in lines {
                let _ = writeln!(o, "{l}");
            }
            let _ = writeln!(o, "```\n");
        }
        for n in &p.notes {
            let _ = writeln!(o, "- note: {n}");
        }
    }

    pub fn json(&self) -> Value {
        let scenarios: Vec<Value> = self
            .results
            .iter()
            .map(|(spec, runs)| {
                let sides: serde_json::Map<String, Value> = runs
                    .iter()
                    .map(|(l, r)| {
                        let execs: serde_json::Map<String, Value> = r
                            .exec_ms
                            .iter()
                            .map(|(k, v)| (k.clone(), Summary::of(v, 0.0).to_json()))
                            .collect();
                        (
                            l.clone(),
                            json!({
                                "add": add_summary(r).to_json(),
                                "del": del_summary(r).to_json(),
                                "growth_first_last_median_ms": growth(r),
                                "add_failures": r.add_failures, "del_failures": r.del_failures,
                                "errors": r.errors, "leftovers": r.leftovers.to_json(),
                                "execs": execs,
                                "add_samples_ms": r.add_ms, "del_samples_ms": r.del_ms,
                            }),
                        )
                    })
                    .collect();
                json!({"spec": spec.to_json(), "label": spec.label(), "sides": sides})
            })
            .collect();
        let e2e = match self.e2e {
            E2e::Skipped(why) => json!({"skipped": why}),
            E2e::Measured(s) => json!(s.iter().map(Series::to_json).collect::<Vec<_>>()),
        };
        let targets: Vec<Value> = if self.has_ref() {
            self.targets()
                .into_iter()
                .map(|(n, v, ok)| json!({"target": n, "value": v, "met": ok}))
                .collect()
        } else {
            Vec::new()
        };
        json!({
            "machine": self.machine.to_json(),
            "sides": self.sides.iter().map(|s| json!({"label": s.label, "dir": s.dir})).collect::<Vec<_>>(),
            "elapsed_s": self.elapsed_s,
            "notes": self.notes,
            "floor": self.has_floor().then_some(FLOOR_WHAT),
            "scenarios": scenarios,
            "startup": self.startup.iter().map(Series::to_json).collect::<Vec<_>>(),
            "e2e": e2e,
            "memory": self.memory.to_json(),
            "targets": targets,
            "profile": self.profile.map(Profile::to_json),
        })
    }
}

fn rest(p: &Profile, side: &str, whole: &str, ipam: &str, nft: &str) -> Option<(f64, f64)> {
    let (w, c) = p.median(side, whole)?;
    let (iw, ic) = p.median(side, ipam).unwrap_or((0.0, 0.0));
    let (nw, nc) = p.median(side, nft).unwrap_or((0.0, 0.0));
    Some((w - iw - nw, c - ic - nc))
}
