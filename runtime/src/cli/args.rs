//! The command line's types, as clap derives them. `tether run`'s flags are the runtime's own
//! type ([`RunArgs`], in `run/opts.rs`); the rest are small enough to be read in `dispatch.rs`.

use crate::cgroups::Manager;
use crate::run::{CommandArgs, RunArgs};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
    /// The image store: layers, image configs and the name index (config key imageRoot)
    /// [default: /var/lib/tether]
    #[arg(long, global = true, env = "TETHER_IMAGE_ROOT", value_name = "DIR")]
    pub image_root: Option<PathBuf>,
    /// Firewall backend the plugins use (iptables or nftables), written into the conflists as
    /// ipMasqBackend (bridge) and backend (portmap, firewall); overrides firewallBackend of the
    /// config file [default: the plugins' own policy, see README]
    #[arg(
        long,
        global = true,
        env = "TETHER_FIREWALL_BACKEND",
        value_name = "BACKEND"
    )]
    pub firewall_backend: Option<String>,
    /// A JSON config file with defaults for root, configDir, cniPath, imageRoot and
    /// firewallBackend
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
    Cni(crate::cnitool::CniCmd),
    /// List images: REPOSITORY, TAG, IMAGE ID, CREATED, SIZE
    Images,
    /// Manage images: import, inspect, export, prune
    #[command(subcommand)]
    Image(crate::image::cmd::ImageCmd),
    /// Remove images (refused while a container uses one, unless -f)
    Rmi(crate::image::cmd::RmiArgs),
    /// Show a container's changes to its image: A added, C changed, D deleted
    Diff {
        /// Container name or id
        container: String,
    },
    /// Make a new image from a container's writable layer on top of its image
    Commit {
        /// Container name or id
        container: String,
        /// The new image's NAME[:TAG]
        reference: String,
    },
    /// Multi-host overlay networks: VXLAN between hosts, cluster state in etcd
    #[command(subcommand)]
    Overlay(tether_overlay_agent::OverlayCmd),
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open: the command reads tether's stdin (without -i it reads /dev/null)
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal for the command; with -i the terminal is put in raw mode
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Container name or id
    pub container: String,
    #[command(flatten)]
    pub cmd: CommandArgs,
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
    Create(crate::network::CreateArgs),
    /// List networks
    Ls,
    /// Show a network's conflist and the containers attached to it
    Inspect {
        /// Network name
        name: String,
    },
    /// Remove networks: GC their state (attachments, rules, the bridge tether made), then the
    /// config; refused while containers use them
    Rm {
        /// Network names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Clean up after containers whose tether died, and GC every network's stale attachments
    Prune,
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
    fn host_mode_help_warns() {
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").unwrap();
        let help = run.render_help().to_string();
        assert!(
            help.contains("WARNING") && help.contains("host's network stack"),
            "{help}"
        );
        assert!(help.contains("bind any host port") && help.contains("CAP_NET_ADMIN"));
        assert!(help.contains("--privileged") && help.contains("root on the host"));
    }
}
