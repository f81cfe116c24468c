//! The `tether` command line: clap definitions and dispatch. No logic lives here beyond printing.

use crate::cgroups::Manager;
use crate::container;
use crate::error::{Context, Error, Result};
use crate::network::{self, NetMode};
use crate::run::{self, RunOpts};
use crate::state::{Paths, Status, Store};
use crate::units;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

const NET_HELP: &str = "Network: `bridge` (default: the built-in tether0 bridge, 10.88.0.0/16, NAT), \
`none` (own namespace, loopback only), `container:NAME` (share NAME's namespace: same addresses and \
ports), `host`, or a network made with `tether network create`. \
WARNING: `host` gives the container the host's network stack: it can bind any host port, see all of the \
host's traffic, and with CAP_NET_ADMIN (root has it) change the host's interfaces, routes and firewall.";

#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    about = "A small container runtime: namespaces, cgroups v1/v2, and Docker's --net modes through CNI plugins",
    long_about = None,
    after_help = "State lives under --root; `tether rm` and `tether network prune` repair what a killed `tether` left behind."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// State directory: one subdirectory per container, the CNI result cache, IPAM leases
    /// [default: /run/tether]
    #[arg(long, global = true, env = "TETHER_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Where network configs (*.conflist) live [default: /etc/tether/net.d]
    #[arg(long, global = true, env = "TETHER_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Directories to search for CNI plugins, ':'-separated; overrides cniPath of the config file
    /// [default: the directory tether is installed in, then /opt/cni/bin]
    #[arg(long, global = true, env = "CNI_PATH", value_name = "DIRS")]
    pub cni_path: Option<String>,
    /// A JSON config file with defaults for root, configDir and cniPath
    #[arg(
        long,
        global = true,
        env = "TETHER_CONFIG",
        value_name = "FILE",
        default_value = "/etc/tether/tether.json"
    )]
    pub config: PathBuf,
    /// Which cgroup version to use: auto picks v2 when the host's v2 hierarchy has the controllers
    #[arg(long, global = true, env = "TETHER_CGROUP_MANAGER", value_enum, default_value_t = Manager::Auto)]
    pub cgroup_manager: Manager,
    /// Log filter for tether's own diagnostics on stderr (e.g. debug)
    #[arg(
        long,
        global = true,
        env = "TETHER_LOG",
        value_name = "FILTER",
        default_value = "warn"
    )]
    pub log: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new container
    Run(Box<RunArgs>),
    /// Run a command inside a running container (joins all of its namespaces)
    Exec(ExecArgs),
    /// List containers
    Ps(PsArgs),
    /// Show a container's state as JSON: status, pid, namespaces, cgroup paths, network result
    Inspect {
        /// Container names or ids
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Print the output of a detached container
    Logs {
        /// Keep printing new output until the container exits
        #[arg(short, long)]
        follow: bool,
        /// Container name or id
        container: String,
    },
    /// Stop containers: SIGTERM, then SIGKILL after a grace period
    Stop {
        /// Seconds to wait before SIGKILL
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        /// Container names or ids
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers
    Kill {
        /// Signal name or number
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        /// Container names or ids
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers: network DEL, cgroup and state removal
    Rm {
        /// Kill running containers first
        #[arg(short, long)]
        force: bool,
        /// Container names or ids
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Freeze every process of containers (cgroup freezer)
    Pause {
        /// Container names or ids
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Thaw paused containers
    Unpause {
        /// Container names or ids
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show CPU time, memory use and peak, and process count of running containers
    Stats {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        /// Containers (default: all running)
        containers: Vec<String>,
    },
    /// Show the host's cgroup setup, the cgroup version tether uses, and its paths
    Info,
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Drive a network config by hand, as cnitool does
    #[command(subcommand)]
    Cni(CniCmd),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  tether run --net=none -- sh -c 'ip addr'\n  tether run -d --name web -p 8080:80 --memory 64m -- busybox httpd -f -p 80\n  tether run --rm --net=container:web -- wget -qO- http://127.0.0.1/"
)]
pub struct RunArgs {
    /// Run in the background; print the container id. Output goes to a log (`tether logs`)
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// A unique name for the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass tether's own value)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container (absolute; created if missing)
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    #[arg(long = "net", visible_alias = "network", default_value = "bridge", value_name = "MODE", help = NET_HELP)]
    pub net: String,
    /// Publish a container port on the host: [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp|sctp]
    /// (passed to the portmap plugin as the portMappings capability)
    #[arg(short, long = "publish", value_name = "MAPPING")]
    pub publish: Vec<String>,
    /// Hostname inside the container [default: the short id; the host's name with --net=host]
    #[arg(long)]
    pub hostname: Option<String>,
    /// Root filesystem directory to pivot into; /proc, /dev basics and /etc/{hosts,hostname,resolv.conf}
    /// are provided. Without it the container sees the host's files in its own mount namespace
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Run in a new user namespace: root inside is mapped to an unprivileged host id
    #[arg(long)]
    pub userns: bool,
    /// First host uid/gid of the --userns mapping (container id 0)
    #[arg(long, default_value_t = 100_000, value_name = "ID")]
    pub userns_host_id: u32,
    /// Number of ids mapped with --userns
    #[arg(long, default_value_t = 65_536, value_name = "N")]
    pub userns_size: u32,
    #[command(flatten)]
    pub limits: crate::cgroups::LimitFlags,
    /// Parent cgroup: absolute with a leading '/', else below tether's own cgroup
    /// [default: tether (v1), /tether (v2)]
    #[arg(long, env = "TETHER_CGROUP_PARENT", value_name = "PATH")]
    pub cgroup_parent: Option<String>,
    /// The command and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Set an environment variable (KEY=VALUE)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Container name or id
    pub container: String,
    /// The command and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones)
    #[arg(short, long)]
    pub all: bool,
    /// Only print ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a bridge network (writes NAME.conflist into the config dir)
    Create {
        /// Network name (letters, digits, '_', '.', '-')
        name: String,
        /// Subnet in CIDR notation, e.g. 10.89.0.0/24
        #[arg(long)]
        subnet: String,
        /// Gateway address (default: the first address of the subnet)
        #[arg(long)]
        gateway: Option<String>,
        /// Linux bridge name (default: tbr-<hash of the name>)
        #[arg(long)]
        bridge: Option<String>,
        /// Do not masquerade traffic leaving the subnet
        #[arg(long)]
        no_masquerade: bool,
        /// The conflist's cniVersion [default: the newest the plugins support, up to 1.1.0, which
        /// `network prune` needs to send GC]
        #[arg(long, value_name = "VERSION")]
        cni_version: Option<String>,
    },
    /// List networks
    Ls,
    /// Show a network's conflist and the containers attached to it
    Inspect {
        /// Network name
        name: String,
    },
    /// Remove network configs (refused while containers use them)
    Rm {
        /// Network names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Clean up after containers whose tether died, and GC every network's stale attachments
    Prune,
}

#[derive(Debug, Args)]
pub struct CniTarget {
    /// Network name (a conflist in the config dir, or the built-in `bridge`)
    pub network: String,
    /// Path of the network namespace (any nsfs path: /run/netns/x, /proc/PID/ns/net)
    pub netns: PathBuf,
    /// CNI_CONTAINERID [default: a hash of the netns path, as cnitool does]
    #[arg(long)]
    pub container_id: Option<String>,
    /// CNI_IFNAME
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
    /// CNI_ARGS, e.g. "IP=10.88.0.9;K=V"
    #[arg(long, env = "CNI_ARGS")]
    pub args: Option<String>,
    /// Capability arguments as a JSON object, e.g. '{"portMappings":[...]}'
    #[arg(long, env = "CAP_ARGS")]
    pub capability_args: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CniCmd {
    /// ADD: attach NETNS to NETWORK; prints the result
    Add(CniTarget),
    /// DEL: detach, in reverse plugin order with the cached result
    Del(CniTarget),
    /// CHECK the attachment against the cached result
    Check(CniTarget),
    /// STATUS: whether the network's plugins are ready
    Status {
        /// Network name
        network: String,
    },
    /// GC: remove every attachment of NETWORK except the listed ones
    Gc {
        /// Network name
        network: String,
        /// CONTAINERID:IFNAME of an attachment to keep (repeatable)
        #[arg(long = "valid", value_name = "ID:IFNAME")]
        valid: Vec<String>,
    },
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    root: Option<PathBuf>,
    config_dir: Option<PathBuf>,
    cni_path: Option<Value>,
}

fn paths(g: &Global) -> Result<Paths> {
    let file: ConfigFile = match std::fs::read(&g.config) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::usage(format!("config file {}: {e}", g.config.display())))?,
        Err(_) => ConfigFile::default(),
    };
    // An empty CNI_PATH counts as unset, so the config file or the defaults apply.
    let flag = g.cni_path.as_deref().filter(|s| !s.is_empty());
    let user_cni: Vec<PathBuf> = match (flag, &file.cni_path) {
        (Some(s), _) => network::split_path_list(s),
        (None, Some(Value::String(s))) => network::split_path_list(s),
        (None, Some(Value::Array(a))) => a
            .iter()
            .filter_map(Value::as_str)
            .map(PathBuf::from)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Paths {
        root: g
            .root
            .clone()
            .or(file.root)
            .unwrap_or_else(|| PathBuf::from("/run/tether")),
        config_dir: g
            .config_dir
            .clone()
            .or(file.config_dir)
            .unwrap_or_else(|| PathBuf::from("/etc/tether/net.d")),
        cni_path: network::cni_search_path(&user_cni),
    })
}

/// Runs a parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    let is_run = matches!(cli.command, Command::Run(_) | Command::Exec(_));
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tether: {e}");
            // Docker's convention: 125 when the runtime itself failed to run the container.
            if is_run { 125 } else { 1 }
        }
    }
}

fn for_each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<i32> {
    let mut failed = None;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "tether: {n}: {e}");
                failed = Some(1);
            }
        }
    }
    Ok(failed.unwrap_or(0))
}

fn dispatch(cli: Cli) -> Result<i32> {
    let p = paths(&cli.global)?;
    match cli.command {
        Command::Run(a) => {
            let a = *a;
            run::run(
                &p,
                RunOpts {
                    command: a.command,
                    name: a.name,
                    detach: a.detach,
                    auto_remove: a.rm,
                    env: a.env,
                    workdir: a.workdir,
                    net: a.net,
                    publish: a.publish,
                    hostname: a.hostname,
                    rootfs: a.rootfs,
                    userns: a.userns,
                    userns_host_id: a.userns_host_id,
                    userns_size: a.userns_size,
                    limits: a.limits,
                    cgroup_parent: a.cgroup_parent,
                    cgroup_manager: cli.global.cgroup_manager,
                },
            )
        }
        Command::Exec(a) => container::exec(&p, &a.container, a.command, &a.env, a.workdir),
        Command::Ps(a) => ps(&p, &a),
        Command::Inspect { containers } => {
            let mut out = Vec::new();
            let mut code = 0;
            for c in &containers {
                match container::inspect(&p, c) {
                    Ok(s) => out.push(serde_json::to_value(s).expect("state serializes")),
                    Err(e) => {
                        let _ = writeln!(std::io::stderr(), "tether: {e}");
                        code = 1;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out).expect("json"));
            Ok(code)
        }
        Command::Logs { follow, container } => logs(&p, &container, follow),
        Command::Stop { time, containers } => for_each(&containers, |c| {
            container::stop(&p, c, Duration::from_secs(time))
        }),
        Command::Kill { signal, containers } => {
            let sig = units::parse_signal(&signal)?;
            for_each(&containers, |c| container::kill_container(&p, c, sig))
        }
        Command::Rm { force, containers } => for_each(&containers, |c| container::rm(&p, c, force)),
        Command::Pause { containers } => for_each(&containers, |c| container::pause(&p, c, true)),
        Command::Unpause { containers } => {
            for_each(&containers, |c| container::pause(&p, c, false))
        }
        Command::Stats { json, containers } => stats(&p, &containers, json),
        Command::Info => {
            let v = json!({
                "cgroupHost": crate::cgroups::describe_host(),
                "cgroupVersion": crate::cgroups::resolve(cli.global.cgroup_manager).to_string(),
                "root": p.root,
                "configDir": p.config_dir,
                "cniPath": p.cni_path,
            });
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            Ok(0)
        }
        Command::Network(n) => network_cmd(&p, n),
        Command::Cni(c) => cni_cmd(&p, c),
    }
}

fn ps(p: &Paths, a: &PsArgs) -> Result<i32> {
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
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
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

fn logs(p: &Paths, name: &str, follow: bool) -> Result<i32> {
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

fn stats(p: &Paths, names: &[String], as_json: bool) -> Result<i32> {
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
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
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

fn network_cmd(p: &Paths, n: NetworkCmd) -> Result<i32> {
    match n {
        NetworkCmd::Create {
            name,
            subnet,
            gateway,
            bridge,
            no_masquerade,
            cni_version,
        } => {
            let subnet = subnet.parse().map_err(|e| {
                Error::usage(format!(
                    "invalid --subnet {subnet:?}: {e}; use CIDR notation such as 10.89.0.0/24"
                ))
            })?;
            let gateway = gateway
                .map(|g| {
                    g.parse().map_err(|_| {
                        Error::usage(format!("invalid --gateway {g:?}: use an IP address"))
                    })
                })
                .transpose()?;
            let f = network::create_network(
                p,
                &network::CreateOpts {
                    name: &name,
                    subnet,
                    gateway,
                    bridge: bridge.as_deref(),
                    masquerade: !no_masquerade,
                    cni_version: cni_version.as_deref(),
                },
            )?;
            println!("{name}");
            tracing::info!(file = %f.display(), "network config written");
            Ok(0)
        }
        NetworkCmd::Ls => {
            println!("{:<20}  {:<12}  {:<20}  SOURCE", "NAME", "DRIVER", "SUBNET");
            for (l, file) in network::list_networks(p) {
                let driver = l
                    .plugins
                    .first()
                    .and_then(|x| x.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let subnets: Vec<String> = network::subnets(&l)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
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
        NetworkCmd::Inspect { name } => {
            let l = network::load_network(p, &name)?;
            let containers: Vec<Value> = Store { paths: p }
                .list()
                .into_iter()
                .filter(|s| s.network.name() == name && s.is_running())
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
            let v = json!({"name": l.name, "conflist": l.to_json(), "containers": containers});
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            Ok(0)
        }
        NetworkCmd::Rm { names } => for_each(&names, |name| crate::gc::remove_network(p, name)),
        NetworkCmd::Prune => {
            for line in crate::gc::prune(p)? {
                println!("{line}");
            }
            Ok(0)
        }
    }
}

fn runtime_conf(t: &CniTarget) -> Result<cni::runtime::RuntimeConf> {
    let container_id = match &t.container_id {
        Some(c) => c.clone(),
        None => {
            use sha2::Digest;
            let h = sha2::Sha256::digest(t.netns.as_os_str().as_encoded_bytes());
            h.iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let args = t
        .args
        .as_deref()
        .unwrap_or("")
        .split(';')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::usage(format!("invalid --args entry {kv:?}: use KEY=VALUE")))
        })
        .collect::<Result<_>>()?;
    let capability_args = match &t.capability_args {
        Some(s) => match serde_json::from_str(s) {
            Ok(Value::Object(m)) => m,
            _ => return Err(Error::usage("--capability-args must be a JSON object")),
        },
        None => Default::default(),
    };
    Ok(cni::runtime::RuntimeConf {
        container_id,
        netns: t.netns.clone(),
        ifname: t.ifname.clone(),
        args,
        capability_args,
    })
}

fn cni_cmd(p: &Paths, c: CniCmd) -> Result<i32> {
    let inv = p.invoker();
    match c {
        CniCmd::Add(t) => {
            let l = network::load_network(p, &t.network)?;
            let r = inv.add(&l, &runtime_conf(&t)?).ctx("ADD failed")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&r.to_json(&l.cni_version)).expect("json")
            );
        }
        CniCmd::Del(t) => {
            let l = network::load_network(p, &t.network)?;
            inv.del(&l, &runtime_conf(&t)?).ctx("DEL failed")?;
        }
        CniCmd::Check(t) => {
            let l = network::load_network(p, &t.network)?;
            inv.check(&l, &runtime_conf(&t)?).ctx("CHECK failed")?;
        }
        CniCmd::Status { network } => {
            let l = network::load_network(p, &network)?;
            inv.status(&l).ctx("STATUS failed")?;
            println!("{network}: ready");
        }
        CniCmd::Gc { network, valid } => {
            let l = network::load_network(p, &network)?;
            let valid = valid
                .iter()
                .map(|v| {
                    v.split_once(':')
                        .map(|(c, i)| cni::Attachment {
                            container_id: c.to_string(),
                            ifname: i.to_string(),
                        })
                        .ok_or_else(|| {
                            Error::usage(format!("invalid --valid {v:?}: use CONTAINERID:IFNAME"))
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            inv.gc(&l, &valid).ctx("GC failed")?;
        }
    }
    Ok(0)
}

/// `NetMode` is re-exported for the tests' convenience.
pub fn parse_net(s: &str) -> Result<NetMode> {
    NetMode::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in c.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for s in c.get_subcommands() {
            let p = format!("{path} {}", s.get_name());
            if s.get_about().is_none() && s.get_name() != "help" {
                missing.push(p.clone());
            }
            walk(s, &p, missing);
        }
    }

    #[test]
    fn every_command_and_flag_has_help() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "tether", &mut missing);
        assert_eq!(missing, Vec::<String>::new());
    }

    #[test]
    fn an_explicit_cni_path_replaces_the_default_search_path() {
        let d = tempfile::tempdir().unwrap();
        let global = |cni: Option<&str>, config: &str| Global {
            root: None,
            config_dir: None,
            cni_path: cni.map(str::to_string),
            config: d.path().join(config),
            cgroup_manager: Manager::Auto,
            log: "warn".into(),
        };
        let search = |cni: Option<&str>, config: &str| -> Vec<String> {
            paths(&global(cni, config))
                .unwrap()
                .cni_path
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        };
        let exe_dir = std::env::current_exe().unwrap();
        let exe_dir = exe_dir.parent().unwrap().display().to_string();
        assert_eq!(
            search(None, "absent.json"),
            [exe_dir, "/opt/cni/bin".into()]
        );
        assert_eq!(search(Some("/a::/b:/a"), "absent.json"), ["/a", "/b"]);
        std::fs::write(d.path().join("list.json"), r#"{"cniPath": ["/c"]}"#).unwrap();
        std::fs::write(d.path().join("str.json"), r#"{"cniPath": "/d:/e"}"#).unwrap();
        assert_eq!(search(None, "list.json"), ["/c"]);
        assert_eq!(search(None, "str.json"), ["/d", "/e"]);
        // The flag (or CNI_PATH) beats the file; an empty one counts as unset.
        assert_eq!(search(Some("/a"), "str.json"), ["/a"]);
        assert_eq!(search(Some(""), "str.json"), ["/d", "/e"]);
    }

    #[test]
    fn host_mode_help_warns() {
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").unwrap();
        let help = run.render_help().to_string();
        assert!(
            help.contains("WARNING") && help.contains("host's network stack"),
            "{help}"
        );
        assert!(help.contains("bind any host port") && help.contains("CAP_NET_ADMIN"));
    }
}
