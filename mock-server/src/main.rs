use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use exports_mock::{Clock, MockOptions, RunningMock};
use exports_spec::Spec;

/// glibc's allocator was about a seventh of the mock's CPU under the benchmark's POSTs (small
/// blocks, often freed on another thread than the one that made them); mimalloc's, less than half
/// that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A mock of the exports API for frontend developers, driven by spec/openapi.yaml.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The OpenAPI document to serve.
    #[arg(long, env = "EXPORTS_MOCK_SPEC", default_value = "spec/openapi.yaml")]
    spec: PathBuf,
    /// Address to listen on: loopback by default; the container image listens on 0.0.0.0.
    #[arg(long, env = "EXPORTS_MOCK_HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long, env = "EXPORTS_MOCK_PORT", default_value_t = 4010)]
    port: u16,
    /// Answer every request with the spec's examples only (no remembered exports).
    #[arg(long)]
    stateless: bool,
    /// Exports finish this many times faster than their estimated_seconds.
    #[arg(long, env = "EXPORTS_MOCK_SPEED", default_value_t = 1.0)]
    speed: f64,
    /// Milliseconds added to every response (`Prefer: latency=<ms>` sets it per request).
    #[arg(long, env = "EXPORTS_MOCK_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Seed of the data `Prefer: dynamic=true` generates (same seed, same data).
    #[arg(long, env = "EXPORTS_MOCK_SEED", default_value_t = 0)]
    seed: u64,
    /// Do not reload the spec when its file changes.
    #[arg(long)]
    no_watch: bool,
    /// An API key the mock accepts, with its scopes: `--key exk_reader=exports:read`
    /// (repeat it; scopes comma-separated). Other keys get 401, and a key without an
    /// operation's scope 403. Without any, every non-empty key is accepted with every scope.
    #[arg(long = "key", value_name = "KEY=SCOPES", value_parser = parse_key)]
    keys: Vec<(String, Vec<String>)>,
    /// Serve the test sandbox's controls under `/__mock/` (reset the state, make the next
    /// requests to an operation fail): for a frontend's tests, never for a shared mock.
    #[arg(long, env = "EXPORTS_MOCK_SANDBOX")]
    sandbox: bool,
}

fn parse_key(text: &str) -> Result<(String, Vec<String>), String> {
    let (key, scopes) = text
        .split_once('=')
        .ok_or("expected KEY=SCOPES, such as exk_reader=exports:read")?;
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    let scopes = scopes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    Ok((key.to_string(), scopes))
}

#[tokio::main]
async fn main() -> Result<()> {
    let _flushed_on_exit = exports_listener::log::init().map_err(anyhow::Error::msg)?;
    let cli = Cli::parse();
    let spec = Spec::load(&cli.spec)?;
    let options = MockOptions {
        stateful: !cli.stateless,
        speed: cli.speed,
        latency: std::time::Duration::from_millis(cli.latency_ms),
        watch: (!cli.no_watch).then(|| cli.spec.clone()),
        seed: cli.seed,
        clock: Clock::System,
        keys: (!cli.keys.is_empty()).then(|| cli.keys.into_iter().collect()),
        sandbox: cli.sandbox,
        ..MockOptions::default()
    };
    let running = RunningMock::start(spec, SocketAddr::new(cli.host, cli.port), options).await?;
    tracing::info!(address = %running.local_addr, spec = %cli.spec.display(), "mock server listening");
    if !cli.stateless {
        tracing::info!("webhook endpoints may be http and resolve to private addresses here (the mock is for local development; the server refuses both unless --webhooks-allow-private)");
    }
    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    Ok(())
}
