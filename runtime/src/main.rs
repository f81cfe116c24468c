use clap::Parser;

fn main() {
    let cli = tether::cli::Cli::parse();
    // The overlay agent is a daemon: its joins, leaves and etcd outages are worth seeing.
    let overlay =
        matches!(cli.command, tether::cli::Command::Overlay(_)) && cli.global.log == "warn";
    let log = if overlay {
        "info"
    } else {
        cli.global.log.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // `TETHER_LOG=debug` shows each phase of a command with its duration (`close
        // time.busy=...`): clone, cgroups, every CNI call, state writes.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .init();
    std::process::exit(tether::cli::main(cli));
}
