//! `cargo xtask bench api`: throughput and latency of the API's main operations under
//! concurrent keep-alive connections, beside a no-op endpoint on the same server in the same
//! run. The server is the release binary, on its own database and Redis prefix.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

use exports_server::{auth, db, queue, users};

pub struct ApiBenchOptions {
    pub connections: usize,
    pub seconds: u64,
    pub users: i64,
    pub callers: usize,
}

pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    /// Where to send the requests when not to the public address.
    pub(crate) target: Option<std::net::SocketAddr>,
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) body: Option<&'static str>,
    pub(crate) expect: u16,
    /// API keys the requests take turns with.
    pub(crate) keys: Vec<String>,
}

pub(crate) struct Outcome {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Outcome {
    pub(crate) fn figures(&self) -> serde_json::Value {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        json!({
            "requests_per_second": (self.requests as f64 / self.elapsed.as_secs_f64()).round(),
            "p50_ms": ms(0.50),
            "p99_ms": ms(0.99),
            "errors": self.errors,
        })
    }
}

/// Builds the release server and returns its path.
pub(crate) fn release_server(root: &std::path::Path) -> Result<std::path::PathBuf> {
    println!("building the release server ...");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "exports-server"])
        .current_dir(root)
        .status()?;
    anyhow::ensure!(status.success(), "building exports-server failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| root.join("target"));
    Ok(target.join("release/exports-server"))
}

pub fn run(root: &std::path::Path, options: ApiBenchOptions) -> Result<()> {
    let binary = release_server(root)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(&binary, options))
}

/// A database and Redis prefix of the run's own; `cleanup` removes them.
pub(crate) struct Sandbox {
    pub(crate) admin_url: String,
    pub(crate) database: String,
    pub(crate) database_url: String,
    pub(crate) redis_prefix: String,
}

pub(crate) const REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Sandbox {
    pub(crate) fn new() -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let admin_url = std::env::var("EXPORTS_BENCH_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let database = format!("exports_bench_{suffix}");
        Self {
            database_url: format!("{admin_url}/{database}"),
            admin_url,
            database,
            redis_prefix: format!("exports:bench:{suffix}:"),
        }
    }
}

/// The server process; killed (and its database dropped by the caller) however the run ends.
pub(crate) struct ServerProcess(pub(crate) Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn bench(binary: &std::path::Path, options: ApiBenchOptions) -> Result<()> {
    let Sandbox {
        admin_url,
        database,
        database_url,
        redis_prefix,
    } = Sandbox::new();
    let redis_url = REDIS_URL;

    db::ensure_database(&database_url).await?;
    let result = async {
        db::migrate(&database_url).await?;
        let pool = db::pool(&database_url, 8)?;
        let client = pool.get().await?;
        users::seed_demo_users(&client, options.users).await?;
        drop(client);
        let mut keys = issue_keys(&pool, options.callers.max(1) + 1).await?;
        // The reading operations use a user of their own, outside the creates' rotation.
        let key = keys.pop().expect("one key at least");

        let port = free_port()?;
        let mut server = ServerProcess(
            Command::new(binary)
                .args([
                    "--database-url",
                    &database_url,
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                ])
                .args(["--redis-prefix", &redis_prefix, "--redis-url", redis_url])
                .stdout(Stdio::piped())
                .spawn()
                .context("starting exports-server")?,
        );
        let dropshot_addr = dropshot_address(&mut server.0)?;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        wait_until_ready(addr, "/health/ready", 10).await?;

        let export_id: uuid::Uuid = {
            let (status, body) = request_once(
                addr,
                &key,
                http::Method::POST,
                "/api/v1/exports/users",
                Some(CREATE_BODY),
            )
            .await?;
            anyhow::ensure!(
                status == 202,
                "creating the export to read failed: {status} {body}"
            );
            serde_json::from_str::<serde_json::Value>(&body)?["export_id"]
                .as_str()
                .context("export_id")?
                .parse()?
        };
        let one = vec![key.clone()];
        let create = |name, keys| Scenario {
            name,
            target: None,
            method: http::Method::POST,
            path: "/api/v1/exports/users".into(),
            body: Some(CREATE_BODY),
            expect: 202,
            keys,
        };
        let get = |name, path: String| Scenario {
            name,
            target: None,
            method: http::Method::GET,
            path,
            body: None,
            expect: 200,
            keys: one.clone(),
        };
        let scenarios = [
            get("noop", "/health/live".into()),
            // The same no-op straight to dropshot, past the edge: the difference is the edge's cost.
            Scenario {
                name: "noop_without_edge",
                target: Some(dropshot_addr),
                ..get("", "/health/live".into())
            },
            create("create", keys.clone()),
            get("get", format!("/api/v1/exports/users/{export_id}")),
            get("list", "/api/v1/exports/users?limit=20".into()),
        ];
        println!(
            "{} connections, {} s per operation, {} users in the table, creates spread over {} callers",
            options.connections,
            options.seconds,
            options.users,
            keys.len()
        );
        let mut figures = measure(addr, &scenarios, options.connections, options.seconds, "").await?;
        drop(server);
        figures.insert("connections".into(), json!(options.connections));
        figures.insert("seconds".into(), json!(options.seconds));
        println!("{}", serde_json::Value::Object(figures));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    cleanup(&admin_url, &database, redis_url, &redis_prefix).await;
    result
}

/// Users with a key each, issued over a few connections at once.
pub(crate) async fn issue_keys(pool: &deadpool_postgres::Pool, count: usize) -> Result<Vec<String>> {
    let scopes: Vec<String> = auth::SCOPES.iter().map(|s| s.to_string()).collect();
    let issue = |caller: usize| {
        let (pool, scopes) = (pool.clone(), scopes.clone());
        async move {
            let client = pool.get().await?;
            let email = format!("bench{caller}@example.com");
            let user_id = users::ensure_user(&client, &email, "Bench").await?;
            Ok::<_, anyhow::Error>(auth::issue_key(&client, user_id, "bench", &scopes).await?.token)
        }
    };
    let keys = futures::stream::iter((0..count).map(issue))
        .buffered(8)
        .collect::<Vec<_>>()
        .await;
    keys.into_iter().collect()
}

pub(crate) const CREATE_BODY: &str = r#"{"format":"csv","filters":{"status":"active"}}"#;

/// Reads the server's log until it names dropshot's loopback address, then keeps draining it.
fn dropshot_address(server: &mut Child) -> Result<std::net::SocketAddr> {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(server.stdout.take().context("server stdout")?).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) {
            if let Some(addr) = record["dropshot_addr"].as_str() {
                let addr = addr.parse()?;
                std::thread::spawn(move || lines.for_each(drop));
                return Ok(addr);
            }
        }
    }
    bail!("the server exited before listening")
}

/// Each scenario in turn, after a short warm-up (which fills connection pools and statement
/// caches): prints a line of figures per scenario and returns them by name.
pub(crate) async fn measure(
    addr: std::net::SocketAddr,
    scenarios: &[Scenario],
    connections: usize,
    seconds: u64,
    label: &str,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut figures = serde_json::Map::new();
    for scenario in scenarios {
        load(addr, scenario, connections, Duration::from_secs(1)).await?;
        let outcome = load(addr, scenario, connections, Duration::from_secs(seconds)).await?;
        let f = outcome.figures();
        println!(
            "{label:>6} {:>17}: {:>8} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
            scenario.name,
            f["requests_per_second"],
            f["p50_ms"].as_f64().unwrap_or(0.0),
            f["p99_ms"].as_f64().unwrap_or(0.0),
            f["errors"]
        );
        figures.insert(scenario.name.to_string(), f);
    }
    Ok(figures)
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) async fn wait_until_ready(addr: std::net::SocketAddr, path: &str, seconds: u64) -> Result<()> {
    for _ in 0..seconds * 10 {
        if let Ok((200, _)) = request_once(addr, "", http::Method::GET, path, None).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server did not become ready")
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: std::net::SocketAddr) -> Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn build_request(
    addr: std::net::SocketAddr,
    key: &str,
    method: &http::Method,
    path: &str,
    body: Option<&'static str>,
) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::builder()
        .method(method.clone())
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {key}"));
    if body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    builder
        .body(Full::new(Bytes::from_static(body.unwrap_or("").as_bytes())))
        .expect("valid request")
}

pub(crate) async fn request_once(
    addr: std::net::SocketAddr,
    key: &str,
    method: http::Method,
    path: &str,
    body: Option<&'static str>,
) -> Result<(u16, String)> {
    let mut sender = connect(addr).await?;
    let response = sender
        .send_request(build_request(addr, key, &method, path, body))
        .await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// `connections` keep-alive connections, each sending requests back to back for `duration`.
pub(crate) async fn load(
    addr: std::net::SocketAddr,
    scenario: &Scenario,
    connections: usize,
    duration: Duration,
) -> Result<Outcome> {
    let addr = scenario.target.unwrap_or(addr);
    let started = Instant::now();
    let deadline = started + duration;
    let keys: Arc<[String]> = scenario.keys.clone().into();
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let mut sender = connect(addr).await?;
        let (keys, method, path, body, expect) = (
            keys.clone(),
            scenario.method.clone(),
            scenario.path.clone(),
            scenario.body,
            scenario.expect,
        );
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let (mut requests, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                // Connections interleave, so a run goes through every key before reusing one.
                let key = &keys[(requests as usize * connections + connection) % keys.len()];
                let sent = Instant::now();
                let ok = match sender
                    .send_request(build_request(addr, key, &method, &path, body))
                    .await
                {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        response.into_body().collect().await.is_ok() && status == expect
                    }
                    Err(_) => false,
                };
                latency.saturating_record(sent.elapsed().as_micros() as u64);
                requests += 1;
                if !ok {
                    errors += 1;
                    if sender.ready().await.is_err() {
                        match connect(addr).await {
                            Ok(fresh) => sender = fresh,
                            Err(_) => break,
                        }
                    }
                }
            }
            (requests, errors, latency)
        }));
    }
    let mut outcome = Outcome {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for task in tasks {
        let (requests, errors, latency) = task.await?;
        outcome.requests += requests;
        outcome.errors += errors;
        outcome.latency.add(latency)?;
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

pub(crate) async fn cleanup(admin_url: &str, database: &str, redis_url: &str, redis_prefix: &str) {
    if let Ok((client, connection)) =
        tokio_postgres::connect(&format!("{admin_url}/postgres"), tokio_postgres::NoTls).await
    {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"))
            .await;
    }
    if let Ok(redis) = queue::connect(redis_url, 1).await {
        let queue = queue::JobQueue::new(redis, redis_prefix);
        let _ = queue.delete_stream().await;
    }
}
