//! The flags of `tether run`, parsed by clap straight into the type the runtime reads: `plan.rs`
//! checks them and turns them into the container's record. A new flag is a field here (with its
//! help text: a test insists on one) and its use in `plan.rs` (and, if the container's process
//! needs it, a field of `state::Config` that `process/child.rs` reads).

use crate::cgroups::LimitFlags;
use clap::Args;
use std::path::PathBuf;

const NET_HELP: &str = "Network: `bridge` (default: the built-in tether0 bridge, 10.88.0.0/16, NAT), \
`none` (own namespace, loopback only), `container:NAME` (share NAME's namespace: same addresses and \
ports), `host`, or a network made with `tether network create`. \
WARNING: `host` gives the container the host's network stack: it can bind any host port, see all of the \
host's traffic, and with CAP_NET_ADMIN (root has it) change the host's interfaces, routes and firewall.";

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Without --rootfs, the first word before any `--` is an IMAGE (tether images) and the rest its CMD; after `--` it is a host command.\n\nExamples:\n  tether run --net=none busybox:latest sh -c 'echo hi'\n  tether run --net=none -- sh -c 'ip addr'\n  tether run -d --name web -p 8080:80 --memory 64m -- busybox httpd -f -p 80\n  tether run --rm --net=container:web -- wget -qO- http://127.0.0.1/"
)]
pub struct RunArgs {
    /// Run in the background; print the container id. Output goes to a log (`tether logs`)
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open: the container reads tether's stdin (without -i it reads /dev/null)
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal as the container's stdin, stdout and stderr; with -i the
    /// terminal is put in raw mode, so ^C reaches the container. With -d its output is logged
    #[arg(short, long)]
    pub tty: bool,
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
    /// Another name the container resolves by on its network (a network made with
    /// `tether network create`; Docker's flag), besides its --name
    #[arg(
        long = "network-alias",
        visible_alias = "net-alias",
        value_name = "NAME"
    )]
    pub network_alias: Vec<String>,
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
    pub limits: LimitFlags,
    #[command(flatten)]
    pub security: crate::confine::SecurityFlags,
    /// Parent cgroup: absolute with a leading '/', else below tether's own cgroup
    /// [default: tether (v1), /tether (v2)]
    #[arg(long, env = "TETHER_CGROUP_PARENT", value_name = "PATH")]
    pub cgroup_parent: Option<String>,
    // --- filesystem and device confinement (process/masks.rs, devfs.rs, cgroups/devices/) ---
    /// Mount the container's root filesystem read-only (/dev, /dev/shm, /proc, /sys stay as usual;
    /// there is no automatic writable /tmp, as in Docker)
    #[arg(long)]
    pub read_only: bool,
    /// Pass a host device through: HOST[:CONTAINER][:PERMS], PERMS some of rwm (default rwm);
    /// CONTAINER must be under /dev
    #[arg(long = "device", value_name = "DEVICE")]
    pub devices: Vec<String>,
    /// Cgroup namespace: `private` (the container's cgroup is its /) or `host`
    /// [default: private on cgroup v2, host on v1, as Docker]
    #[arg(long, value_name = "MODE")]
    pub cgroupns: Option<String>,
    /// With an image: run CMD instead of its Entrypoint (the image's Cmd is dropped too; an
    /// empty string clears the Entrypoint)
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    #[command(flatten)]
    pub cmd: CommandArgs,
}

/// The container's command, everything after the flags: the same positional for `run` and `exec`.
#[derive(Debug, Clone, Args)]
pub struct CommandArgs {
    /// The command and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "[IMAGE] COMMAND"
    )]
    pub command: Vec<String>,
}
