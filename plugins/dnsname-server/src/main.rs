//! `tether-dns --dir <state dir of the network>`: binds, prints `ready` (or `error: ...`) on
//! stdout, points stdout at /dev/null, and serves until SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use tether_dns_server::{State, control, listen};
use tether_dns_state::{NetDir, ServerConfig};

#[derive(Parser)]
#[command(
    name = "tether-dns",
    about = "The per-network DNS server of Tether's dnsname plugin"
)]
struct Args {
    /// The network's state directory (`<dataDir>/<network>`), holding server.json and
    /// records.json.
    #[arg(long)]
    dir: PathBuf,
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match start(&args) {
        Ok(()) => {}
        Err(e) => {
            tracing::error!("{e}");
            println!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn start(args: &Args) -> Result<(), String> {
    let dir = args
        .dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let network = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("the state directory has no name")?
        .to_string();
    let root = dir.parent().ok_or("the state directory has no parent")?;
    let netdir = NetDir::new(root, &network);
    let config: ServerConfig = tether_dns_state::read_json(&netdir.server_config())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} is missing", netdir.server_config().display()))?;
    let state = Arc::new(State::new(netdir, config)?);
    let bound = listen::bind_all(&state.config.listen, state.config.port)?;
    let ctl = control::bind(&state)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        listen::serve(bound, state.clone())?;
        control::serve(ctl, state.clone())?;
        tracing::info!(network = %state.dir.network, listen = ?state.config.listen, "serving");
        ready();
        control::signals(state.clone()).await;
        Ok::<(), String>(())
    })?;
    let _ = std::fs::remove_file(state.dir.control());
    tracing::info!("stopped");
    Ok(())
}

/// Tells the plugin the sockets are bound, then lets go of its pipe: the plugin's own stdout
/// must close when it exits, whatever the server does after.
fn ready() {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", tether_dns_state::READY);
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto our own stdout fd; `null` stays open until after the call.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}
