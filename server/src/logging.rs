//! One stream of JSON logs through `tracing`; dropshot's slog records are bridged into it.

use tracing_subscriber::EnvFilter;

/// JSON lines on stdout; `RUST_LOG` overrides the default level (`info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .try_init();
}

/// dropshot logs through slog. Its per-request lines would duplicate ours (which carry the
/// user and operation), so only its warnings and errors are forwarded.
pub fn dropshot_logger() -> slog::Logger {
    use slog::Drain;
    let drain = slog::LevelFilter::new(tracing_slog::TracingSlogDrain, slog::Level::Warning).fuse();
    slog::Logger::root(drain, slog::o!("component" => "dropshot"))
}
