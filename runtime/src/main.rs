use clap::Parser;

fn main() {
    let cli = tether::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.global.log)
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
