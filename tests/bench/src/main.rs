//! `tether-bench`: our bridge, host-local and portmap against Debian's reference plugins, through
//! the real protocol (exec, `CNI_*` env, config on stdin), in throwaway network namespaces only.
//!
//! Build everything first, then run from the release directory:
//! `cargo build --release --workspace --bins && target/release/tether-bench`.

mod clean;
mod cni;
mod exec;
mod extra;
mod floor;
mod machine;
mod memory;
mod profile;
mod report;
mod scenario;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};

use crate::cni::Side;
use crate::scenario::{Pool, SideRun, Spec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Portmap {
    /// Both conflists: bridge alone, and bridge + portmap.
    Both,
    /// Only bridge + portmap.
    Only,
    /// Only bridge.
    Off,
}

/// Benchmark Tether's CNI plugins against the reference plugins, side by side, interleaved, in
/// throwaway network namespaces (the real host network is never touched). Needs root.
#[derive(Debug, Parser)]
#[command(name = "tether-bench")]
struct Args {
    /// Our plugin binaries (bridge, host-local, portmap; tether for the end-to-end figures).
    /// Default: the directory this binary is in (target/release).
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
    /// The reference plugins.
    #[arg(long, default_value = "/usr/lib/cni")]
    reference_dir: PathBuf,
    /// Measure ours only (and the kernel floor, unless --no-floor).
    /// Leave out the scenarios of our plugins on nftables (`ours-nftables`).
    #[arg(long)]
    no_nftables: bool,
    #[arg(long)]
    no_reference: bool,
    /// Leave out the kernel floor: the same kernel objects as one bridge ADD made by `ip -batch`
    /// alone (no plugin, netlink only), a third side of the scenarios without portmap.
    #[arg(long)]
    no_floor: bool,
    /// Numbers of containers on one bridge. Default 1,100,1000 (--quick: 1,100).
    #[arg(long, value_delimiter = ',')]
    n: Option<Vec<usize>>,
    /// Concurrency of the parallel scenarios (N > 1).
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Which conflists to measure.
    #[arg(long, value_enum, default_value_t = Portmap::Both)]
    portmap: Portmap,
    /// Largest N measured with portmap. The reference's portmap grows quadratically (its 1000th
    /// ADD takes about a second here), so N=1000 with portmap alone would take the reference
    /// about 15 minutes: off by default, `--portmap-max-n 1000` adds it.
    #[arg(long, default_value_t = 100)]
    portmap_max_n: usize,
    /// Rounds of the N=1 scenarios (each round a fresh host). Default 20 (--quick: 5).
    #[arg(long)]
    rounds_single: Option<usize>,
    /// Also print per-phase timings of one ADD and one DEL.
    #[arg(long)]
    profile: bool,
    /// Smoke test: N=1,100, fewer rounds and repetitions.
    #[arg(long)]
    quick: bool,
    /// Also write every figure (and the raw samples) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The runtime for the end-to-end figures. Default: <plugins-dir>/tether.
    #[arg(long)]
    tether: Option<PathBuf>,
    /// Runs of each VERSION start-up measurement. Default 200 (--quick: 50).
    #[arg(long)]
    startup_runs: Option<usize>,
    /// Runs of each `tether run` mode. Default 30 (--quick: 8).
    #[arg(long)]
    e2e_runs: Option<usize>,
    /// Skip the ADD/DEL scenarios (start-up, end-to-end and profile only).
    #[arg(long)]
    no_scenarios: bool,
    /// Scratch space for IPAM data and runtime roots.
    #[arg(long, default_value = "/tmp")]
    work_dir: PathBuf,
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == exec::RUSAGE_MODE) {
        return ExitCode::from(exec::rusage_main(&argv[2..]).clamp(0, 255) as u8);
    }
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

pub const PLUGINS: [&str; 3] = ["bridge", "host-local", "portmap"];

fn run(args: Args) -> Result<(), String> {
    let started = Instant::now();
    raise_nofile();
    let plugins_dir = match &args.plugins_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(PathBuf::from))
            .ok_or("cannot find my own directory; pass --plugins-dir")?,
    };
    let plugins_dir = plugins_dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", plugins_dir.display()))?;
    let ours = Side {
        label: "ours",
        dir: plugins_dir.clone(),
        firewall: None,
    };
    // The same binaries told to use nftables, side by side with the default (iptables).
    let ours_nft = Side {
        label: "ours-nftables",
        firewall: Some("nftables"),
        ..ours.clone()
    };
    for p in PLUGINS {
        if !ours.binary(p).is_file() {
            return Err(format!(
                "{} is missing: build the plugins first (cargo build --release --workspace --bins) \
                 or pass --plugins-dir",
                ours.binary(p).display()
            ));
        }
    }
    let reference = if args.no_reference {
        None
    } else if PLUGINS.iter().all(|p| args.reference_dir.join(p).is_file()) {
        Some(Side {
            label: "reference",
            firewall: None,
            dir: args.reference_dir.clone(),
        })
    } else {
        eprintln!(
            "note: no reference plugins in {}; measuring ours only",
            args.reference_dir.display()
        );
        None
    };
    let sides: Vec<Side> = std::iter::once(ours.clone())
        .chain(reference.clone())
        .collect();
    netns_fixtures::Netns::new().map_err(|e| format!("cannot create a network namespace: {e}"))?;

    let work = scenario::TempDir::new(
        &args.work_dir,
        &format!("tether-bench-{}", std::process::id()),
    )
    .map_err(|e| format!("work dir: {e}"))?;
    let machine = machine::Machine::probe();

    let mut notes = Vec::new();
    let specs = if args.no_scenarios {
        Vec::new()
    } else {
        specs(&args)
    };
    let largest = specs.iter().map(|s| s.n).max().unwrap_or(0);
    if args.portmap != Portmap::Off && largest > args.portmap_max_n {
        notes.push(format!(
            "portmap measured up to N={} only (the reference needs ~15 min for N=1000 with \
             portmap; `--portmap-max-n 1000` adds it).",
            args.portmap_max_n
        ));
    }
    let mut results: Vec<(Spec, Vec<(String, SideRun)>)> = Vec::new();
    let mut pool = Pool::new();
    let floor = (!args.no_floor).then(floor::side);
    for (si, spec) in specs.iter().enumerate() {
        // The floor makes no iptables rules, so it has nothing to say about portmap.
        let sides: Vec<&Side> = std::iter::once(&ours)
            .chain((!args.no_nftables).then_some(&ours_nft))
            .chain(reference.as_ref())
            .chain(floor.as_ref().filter(|_| !spec.portmap))
            .collect();
        let mut runs: Vec<SideRun> = vec![SideRun::default(); sides.len()];
        for r in 0..spec.rounds {
            // Alternate which side goes first, so drift on a shared machine hits all alike.
            let mut order: Vec<usize> = (0..sides.len()).collect();
            if (si + r) % 2 == 1 {
                order.reverse();
            }
            for &k in &order {
                let t = Instant::now();
                scenario::run_round(spec, sides[k], &mut pool, &work.0, &mut runs[k])
                    .map_err(|e| format!("{} on {}: {e}", spec.label(), sides[k].label))?;
                if spec.rounds > 2 && r + 1 < spec.rounds {
                    continue;
                }
                eprintln!(
                    "[{}/{}] {} round {}/{} {}: {:.1} s (total {:.0} s)",
                    si + 1,
                    specs.len(),
                    spec.label(),
                    r + 1,
                    spec.rounds,
                    sides[k].label,
                    t.elapsed().as_secs_f64(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        results.push((
            *spec,
            sides
                .iter()
                .map(|s| s.label.to_string())
                .zip(runs)
                .collect(),
        ));
    }
    drop(pool);

    let startup_runs = args
        .startup_runs
        .unwrap_or(if args.quick { 50 } else { 200 });
    let startup = extra::startup(&sides, startup_runs);
    eprintln!(
        "start-up measured (total {:.0} s)",
        started.elapsed().as_secs_f64()
    );

    let mem = memory::memory(&sides, &work.0, if args.quick { 5 } else { 20 });
    eprintln!(
        "peak memory measured (total {:.0} s)",
        started.elapsed().as_secs_f64()
    );

    let tether = args
        .tether
        .clone()
        .unwrap_or_else(|| plugins_dir.join("tether"));
    let e2e_runs = args.e2e_runs.unwrap_or(if args.quick { 8 } else { 30 });
    let e2e = extra::e2e(&tether, &plugins_dir, &work.0, e2e_runs);
    eprintln!(
        "end to end measured (total {:.0} s)",
        started.elapsed().as_secs_f64()
    );

    let profile = if args.profile {
        Some(profile::profile(
            &sides,
            &work.0,
            specs.iter().map(|s| s.n).max().unwrap_or(100),
        ))
    } else {
        None
    };

    let rep = report::Report {
        machine: &machine,
        sides: &sides,
        results: &results,
        startup: &startup,
        memory: &mem,
        e2e: &e2e,
        profile: profile.as_ref(),
        elapsed_s: started.elapsed().as_secs_f64(),
        notes,
    };
    println!("{}", rep.markdown());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rep.json()).expect("json");
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn specs(args: &Args) -> Vec<Spec> {
    let ns = args.n.clone().unwrap_or(if args.quick {
        vec![1, 100]
    } else {
        vec![1, 100, 1000]
    });
    let portmaps: &[bool] = match args.portmap {
        Portmap::Both => &[false, true],
        Portmap::Only => &[true],
        Portmap::Off => &[false],
    };
    let mut out = Vec::new();
    for &n in ns.iter().filter(|&&n| n > 0) {
        // Concurrency needs more than one container; N=1 is the cold-host figure.
        let pars: Vec<usize> = if n == 1 || args.parallel <= 1 {
            vec![1]
        } else {
            vec![1, args.parallel]
        };
        let rounds = match n {
            1 => args
                .rounds_single
                .unwrap_or(if args.quick { 5 } else { 20 }),
            2..=200 if !args.quick => 2,
            _ => 1,
        };
        for &portmap in portmaps.iter().filter(|&&p| !p || n <= args.portmap_max_n) {
            for &parallel in &pars {
                out.push(Spec {
                    n,
                    parallel,
                    portmap,
                    rounds,
                });
            }
        }
    }
    out
}

/// 1000 container namespaces are 1000 open fds, plus pipes: lift the soft limit to the hard one.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
