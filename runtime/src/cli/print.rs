//! What commands print on stdout: tables for people, JSON for scripts. Errors go to stderr.

use super::args::PsArgs;
use crate::cgroups::Manager;
use crate::cnitool::Outcome;
use crate::container;
use crate::error::{Context, Error, Result};
use crate::network;
use crate::paths::Paths;
use crate::state::{ContainerState, Status, Store};
use crate::units;
use cni::runtime::ConfList;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

pub(super) fn ps(p: &Paths, a: &PsArgs) -> Result<i32> {
    let all = Store { paths: p }.list();
    let shown: Vec<_> = all
        .into_iter()
        .filter(|s| a.all || s.is_running())
        .collect();
    if a.quiet {
        for s in &shown {
            println!("{}", s.short_id());
        }
        return Ok(0);
    }
    if a.json {
        let v: Vec<Value> = shown
            .iter()
            .map(|s| {
                json!({"id": s.id, "name": s.name, "status": s.effective_status().to_string(),
                       "pid": s.state.pid, "network": s.network.mode, "command": s.config.command,
                       "exitCode": s.state.exit_code, "createdAt": s.created_at})
            })
            .collect();
        print_json(&Value::Array(v));
        return Ok(0);
    }
    println!(
        "{:<12}  {:<20}  {:<14}  {:>7}  {:<16}  COMMAND",
        "ID", "NAME", "STATUS", "PID", "NETWORK"
    );
    for s in &shown {
        let status = match (s.effective_status(), s.state.exit_code) {
            (Status::Exited, Some(c)) => format!("exited ({c})"),
            (st, _) => st.to_string(),
        };
        let pid = if s.is_running() {
            s.state.pid.map(|p| p.to_string()).unwrap_or_default()
        } else {
            "-".into()
        };
        println!(
            "{:<12}  {:<20}  {:<14}  {:>7}  {:<16}  {}",
            s.short_id(),
            s.name,
            status,
            pid,
            s.network.mode,
            s.config.command.join(" ")
        );
    }
    Ok(0)
}

pub(super) fn logs(p: &Paths, name: &str, follow: bool) -> Result<i32> {
    use std::io::{Read, Seek};
    let st = Store { paths: p }.find(name)?;
    let path = st.log_path.clone().ok_or_else(|| {
        Error::usage(format!(
            "container {name} ran in the foreground: its output went to the terminal (use -d to keep a log)"
        ))
    })?;
    let mut f = std::fs::File::open(&path).ctx(format!("failed to open {}", path.display()))?;
    let mut out = std::io::stdout();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        f.read_to_end(&mut buf).ctx("read log")?;
        out.write_all(&buf).ctx("write")?;
        out.flush().ctx("write")?;
        if !follow {
            return Ok(0);
        }
        let running = Store { paths: p }
            .load(&st.id)
            .is_ok_and(|s| s.is_running());
        if !running && buf.is_empty() {
            return Ok(0);
        }
        let pos = f.stream_position().ctx("seek")?;
        f.seek(std::io::SeekFrom::Start(pos)).ctx("seek")?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(super) fn stats(p: &Paths, names: &[String], as_json: bool) -> Result<i32> {
    let names: Vec<String> = if names.is_empty() {
        Store { paths: p }
            .list()
            .into_iter()
            .filter(|s| s.is_running())
            .map(|s| s.name)
            .collect()
    } else {
        names.to_vec()
    };
    let mut rows = Vec::new();
    for n in &names {
        let (st, s) = container::stats(p, n)?;
        rows.push((st, s));
    }
    if as_json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(st, s)| {
                let mut o = serde_json::to_value(s).expect("json");
                o["id"] = json!(st.id);
                o["name"] = json!(st.name);
                o["cgroupVersion"] = json!(st.cgroup.as_ref().map(|c| c.version.to_string()));
                o
            })
            .collect();
        print_json(&Value::Array(v));
        return Ok(0);
    }
    println!(
        "{:<12}  {:<20}  {:>10}  {:>22}  {:>10}  {:>9}",
        "ID", "NAME", "CPU TIME", "MEM USAGE / LIMIT", "MEM PEAK", "PIDS"
    );
    for (st, s) in &rows {
        let limit = s.memory_limit.map_or("-".into(), units::human_bytes);
        let pids = match s.pids_limit {
            Some(l) => format!("{}/{l}", s.pids),
            None => s.pids.to_string(),
        };
        println!(
            "{:<12}  {:<20}  {:>9.2}s  {:>22}  {:>10}  {:>9}",
            st.short_id(),
            st.name,
            s.cpu_usage_ns as f64 / 1e9,
            format!("{} / {limit}", units::human_bytes(s.memory_usage)),
            s.memory_peak.map_or("-".into(), units::human_bytes),
            pids
        );
    }
    Ok(0)
}

pub(super) fn inspect(p: &Paths, names: &[String]) -> Result<i32> {
    let mut out = Vec::new();
    let mut code = 0;
    for c in names {
        match container::inspect(p, c) {
            Ok(s) => out.push(serde_json::to_value(s).expect("state serializes")),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "tether: {e}");
                code = 1;
            }
        }
    }
    print_json(&Value::Array(out));
    Ok(code)
}

pub(super) fn info(p: &Paths, manager: Manager) -> Result<i32> {
    print_json(&json!({
        "cgroupHost": crate::cgroups::describe_host(),
        "cgroupVersion": crate::cgroups::resolve(manager).to_string(),
        "root": p.root,
        "configDir": p.config_dir,
        "cniPath": p.cni_path,
        "confinement": crate::confine::defaults(),
    }));
    Ok(0)
}

pub(super) fn network_ls(p: &Paths) -> Result<i32> {
    println!("{:<20}  {:<12}  {:<20}  SOURCE", "NAME", "DRIVER", "SUBNET");
    for (l, file) in network::list_networks(p) {
        let driver = l
            .plugins
            .first()
            .and_then(|x| x.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let subnets: Vec<String> = match network::overlay_view(&l) {
            // The host's part of the overlay, as its agent leased it.
            Some(ov) => vec![ov.subnet_column()],
            None => network::subnets(&l)
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        println!(
            "{:<20}  {:<12}  {:<20}  {}",
            l.name,
            driver,
            subnets.join(","),
            file.map_or("built-in".into(), |f| f.display().to_string())
        );
    }
    Ok(0)
}

/// A network's conflist and the running containers attached to it, with their addresses.
pub(super) fn network_inspect(l: &ConfList, users: &[ContainerState]) -> Result<i32> {
    let containers: Vec<Value> = users
        .iter()
        .map(|s| {
            let addrs: Vec<String> = s
                .network
                .result
                .as_ref()
                .map(|r| {
                    network::container_addresses(r)
                        .iter()
                        .map(ToString::to_string)
                        .collect()
                })
                .unwrap_or_default();
            json!({"id": s.id, "name": s.name, "addresses": addrs})
        })
        .collect();
    let driver = l.plugins.first().and_then(|x| x.get("type")).cloned();
    let mut v = json!({"name": l.name, "driver": driver, "conflist": l.to_json(), "containers": containers});
    if let Some(ov) = network::overlay_view(l) {
        v["overlay"] = ov.to_json();
    }
    print_json(&v);
    Ok(0)
}

pub(super) fn cni(o: Outcome) -> Result<i32> {
    match o {
        Outcome::Result(v) => print_json(&v),
        Outcome::Ready(network) => println!("{network}: ready"),
        Outcome::Done => {}
    }
    Ok(0)
}
