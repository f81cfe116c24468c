//! Logs go to stderr (stdout belongs to the protocol). Level from `TETHER_LOG`, else `RUST_LOG`,
//! else warnings only.

pub fn init() {
    let filter = std::env::var("TETHER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .try_init();
}
