//! `cargo xtask bench api`: throughput and latency of the API's main operations under
//! concurrent keep-alive connections, beside a no-op endpoint on the same server in the same
//! run. The server is the release binary, on its own database and Redis prefix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

use exports_server::db::keys;
use exports_server::db::users;
use exports_server::db::Postgres;
use exports_server::queue::{self, Redis};
use exports_tests::ChildProcess;

pub struct ApiBenchOptions {
    pub connections: usize,
    pub seconds: u64,
    pub users: i64,
    pub callers: usize,
}

pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    /// Where to send the requests when not to the public address.
    pub(crate) target: Option<SocketAddr>,
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) body: Option<&'static str>,
    pub(crate) expect: u16,
    /// API keys the requests take turns with.
    pub(crate) keys: Vec<String>,
    pub(crate) idempotency: IdempotencyKeys,
}

/// The `Idempotency-Key` a scenario's requests send.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdempotencyKeys {
    None,
    /// A new key on every request: a create that remembers its key.
    Fresh,
    /// `replay-<n>` with the `n`th API key, created beforehand: every request is a replay.
    Known,
}

/// Stands for "no answer" (a connection error) among the statuses of unexpected answers.
const NO_ANSWER: u16 = 0;

pub(crate) struct Outcome {
    /// Answers with the scenario's expected status: only these count as throughput.
    expected: u64,
    /// Every other answer, counted by status (`NO_ANSWER` for a request that got none).
    unexpected: BTreeMap<u16, u64>,
    elapsed: Duration,
    /// Latency of the expected answers.
    latency: Histogram<u64>,
}

impl Outcome {
    pub(crate) fn figures(&self) -> serde_json::Value {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        let unexpected: serde_json::Map<_, _> = self
            .unexpected
            .iter()
            .map(|(&status, &count)| (status_name(status), json!(count)))
            .collect();
        json!({
            "requests_per_second": (self.expected as f64 / self.elapsed.as_secs_f64()).round(),
            "p50_ms": ms(0.50),
            "p99_ms": ms(0.99),
            "unexpected": unexpected,
        })
    }
}

fn status_name(status: u16) -> String {
    if status == NO_ANSWER {
        "no_answer".into()
    } else {
        status.to_string()
    }
}

/// Requests of every scenario in `figures` (as `measure` returns them) that got an unexpected
/// answer, or none.
pub(crate) fn unexpected_answers(figures: &serde_json::Map<String, serde_json::Value>) -> u64 {
    figures
        .values()
        .filter_map(|scenario| scenario["unexpected"].as_object())
        .flat_map(|unexpected| unexpected.values())
        .filter_map(serde_json::Value::as_u64)
        .sum()
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

/// Fails (after the figures) when any request got another status than its scenario expects.
pub fn run(root: &std::path::Path, options: ApiBenchOptions) -> Result<ExitCode> {
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
    /// Its database, made and migrated.
    pub(crate) async fn migrated(&self) -> Result<Postgres> {
        let postgres = Postgres::new(&self.database_url, None)?;
        postgres.ensure_database().await?;
        postgres.migrate().await?;
        Ok(postgres)
    }

    /// Removes its database and Redis prefix, whatever the run left them in.
    pub(crate) async fn cleanup(&self) {
        if let Ok((client, connection)) =
            tokio_postgres::connect(&format!("{}/postgres", self.admin_url), tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.database
                ))
                .await;
        }
        let redis = match Redis::new(REDIS_URL, None) {
            Ok(redis) => redis.pool(1).await,
            Err(error) => Err(error),
        };
        if let Ok(redis) = redis {
            let queue = queue::JobQueue::new(redis, &self.redis_prefix);
            let _ = queue.delete_stream().await;
        }
    }

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

/// The line `exports-server serve` logs once listening (JSON, through tracing): the public
/// address (the edge) and dropshot's loopback one.
pub(crate) fn api_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let record: serde_json::Value = serde_json::from_str(line).ok()?;
    if record["message"] != "API listening" {
        return None;
    }
    let address = |field: &str| record[field].as_str()?.parse().ok();
    Some((address("local_addr")?, address("dropshot_addr")?))
}

/// High enough that no run, on any machine, reaches the per-user limit of pending exports
/// (the server takes it as a PostgreSQL `integer`).
const UNREACHABLE_PENDING_LIMIT: i32 = i32::MAX;

async fn bench(binary: &std::path::Path, options: ApiBenchOptions) -> Result<ExitCode> {
    let sandbox = Sandbox::new();
    let Sandbox {
        database_url,
        redis_prefix,
        ..
    } = &sandbox;
    let redis_url = REDIS_URL;

    let result = async {
        let postgres = sandbox.migrated().await?;
        let pool = postgres.pool(8)?;
        let client = pool.get().await?;
        users::seed_demo_users(&client, options.users).await?;
        drop(client);
        let mut keys = issue_keys(&pool, options.callers.max(1) + 1).await?;
        // The reading operations use a user of their own, outside the creates' rotation.
        let key = keys.pop().expect("one key at least");

        // The creates measure the API's throughput, not the per-user limit, so the limit is
        // lifted: a 429 is then an unexpected answer, whatever the machine's speed.
        let (server, (addr, dropshot_addr)) = ChildProcess::start_listening(
            Command::new(binary)
                .args(["--database-url", database_url, "serve", "--listen", "127.0.0.1:0"])
                .args(["--max-pending-per-user", &UNREACHABLE_PENDING_LIMIT.to_string()])
                .args(["--redis-prefix", redis_prefix, "--redis-url", redis_url])
                // `info`: the line that says where it listens.
                .env("RUST_LOG", "info"),
            "exports-server",
            api_listening,
        )?;
        wait_until_ready(addr, "/health/ready", 10).await?;

        let export_id: uuid::Uuid = {
            let (status, body) = request_once(
                addr,
                &key,
                http::Method::POST,
                "/api/v1/exports/users",
                Some(CREATE_BODY),
                None,
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
        // The keys of the replay scenario, each with its first create made now.
        let replayed_keys: Vec<String> = keys.iter().take(REPLAYED_CALLERS).cloned().collect();
        for (index, api_key) in replayed_keys.iter().enumerate() {
            let (status, body) = request_once(
                addr,
                api_key,
                http::Method::POST,
                "/api/v1/exports/users",
                Some(CREATE_BODY),
                Some(&replay_key(index)),
            )
            .await?;
            anyhow::ensure!(
                status == 202,
                "the first create of a replayed key failed: {status} {body}"
            );
        }
        let create = |name, keys, idempotency| Scenario {
            name,
            target: None,
            method: http::Method::POST,
            path: "/api/v1/exports/users".into(),
            body: Some(CREATE_BODY),
            expect: 202,
            keys,
            idempotency,
        };
        let get = |name, path: String| Scenario {
            name,
            target: None,
            method: http::Method::GET,
            path,
            body: None,
            expect: 200,
            keys: one.clone(),
            idempotency: IdempotencyKeys::None,
        };
        let scenarios = [
            get("noop", "/health/live".into()),
            // The same no-op straight to dropshot, past the edge: the difference is the edge's cost.
            Scenario {
                name: "noop_without_edge",
                target: Some(dropshot_addr),
                ..get("", "/health/live".into())
            },
            create("create", keys.clone(), IdempotencyKeys::None),
            create("create_with_key", keys.clone(), IdempotencyKeys::Fresh),
            create("create_replayed", replayed_keys, IdempotencyKeys::Known),
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
        let unexpected = unexpected_answers(&figures);
        figures.insert("connections".into(), json!(options.connections));
        figures.insert("seconds".into(), json!(options.seconds));
        println!("{}", serde_json::Value::Object(figures));
        Ok::<_, anyhow::Error>(if unexpected == 0 {
            ExitCode::SUCCESS
        } else {
            eprintln!(
                "error: {unexpected} requests got an unexpected answer (see `unexpected` per operation)"
            );
            ExitCode::FAILURE
        })
    }
    .await;
    sandbox.cleanup().await;
    result
}

/// Users with a key each, issued over a few connections at once.
pub(crate) async fn issue_keys(pool: &deadpool_postgres::Pool, count: usize) -> Result<Vec<String>> {
    let scopes: Vec<String> = keys::SCOPES.iter().map(|s| s.to_string()).collect();
    let issue = |caller: usize| {
        let (pool, scopes) = (pool.clone(), scopes.clone());
        async move {
            let client = pool.get().await?;
            let email = format!("bench{caller}@example.com");
            let user_id = users::ensure_user(&client, &email, "Bench").await?;
            Ok::<_, anyhow::Error>(
                keys::issue_key(&client, user_id, "bench", &scopes, None)
                    .await?
                    .token,
            )
        }
    };
    let keys = futures::stream::iter((0..count).map(issue))
        .buffered(8)
        .collect::<Vec<_>>()
        .await;
    keys.into_iter().collect()
}

pub(crate) const CREATE_BODY: &str = r#"{"format":"csv","filters":{"status":"active"}}"#;

/// Each scenario in turn, after a short warm-up (which fills connection pools and statement
/// caches): prints a line of figures per scenario and returns them by name.
pub(crate) async fn measure(
    addr: SocketAddr,
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
        let unexpected: Vec<String> = outcome
            .unexpected
            .iter()
            .map(|(&status, count)| format!("{} x{count}", status_name(status)))
            .collect();
        println!(
            "{label:>6} {:>17}: {:>8} req/s ({})  p50 {:>6.2} ms  p99 {:>6.2} ms  unexpected: {}",
            scenario.name,
            f["requests_per_second"],
            scenario.expect,
            f["p50_ms"].as_f64().unwrap_or(0.0),
            f["p99_ms"].as_f64().unwrap_or(0.0),
            if unexpected.is_empty() {
                "none".into()
            } else {
                unexpected.join(", ")
            }
        );
        figures.insert(scenario.name.to_string(), f);
    }
    Ok(figures)
}

pub(crate) async fn wait_until_ready(addr: SocketAddr, path: &str, seconds: u64) -> Result<()> {
    for _ in 0..seconds * 10 {
        if let Ok((200, _)) = request_once(addr, "", http::Method::GET, path, None, None).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server did not become ready")
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Callers of the replay scenario.
const REPLAYED_CALLERS: usize = 1000;

fn replay_key(caller: usize) -> String {
    format!("replay-{caller}")
}

/// One scenario's requests, their parts made once: the load generator shares the machine's
/// cores with the server it measures, so each request it sends should cost it little.
struct Requests {
    method: http::Method,
    uri: http::Uri,
    host: http::HeaderValue,
    /// `Bearer <key>` for each key.
    authorizations: Vec<http::HeaderValue>,
    body: Option<Bytes>,
}

impl Requests {
    fn new(
        addr: SocketAddr,
        keys: &[String],
        method: &http::Method,
        path: &str,
        body: Option<&'static str>,
    ) -> Self {
        let header = |text: String| http::HeaderValue::try_from(text).expect("a valid header value");
        Self {
            method: method.clone(),
            uri: path.parse().expect("a valid path"),
            host: header(addr.to_string()),
            authorizations: keys.iter().map(|key| header(format!("Bearer {key}"))).collect(),
            body: body.map(|body| Bytes::from_static(body.as_bytes())),
        }
    }

    fn build(&self, key: usize, idempotency_key: Option<&str>) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(self.body.clone().unwrap_or_default()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(http::header::HOST, self.host.clone());
        headers.insert(http::header::AUTHORIZATION, self.authorizations[key].clone());
        if self.body.is_some() {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
        }
        if let Some(idempotency_key) = idempotency_key {
            headers.insert(
                "idempotency-key",
                idempotency_key.try_into().expect("a valid key"),
            );
        }
        request
    }
}

pub(crate) async fn request_once(
    addr: SocketAddr,
    key: &str,
    method: http::Method,
    path: &str,
    body: Option<&'static str>,
    idempotency_key: Option<&str>,
) -> Result<(u16, String)> {
    let mut sender = connect(addr).await?;
    let request = Requests::new(addr, &[key.to_string()], &method, path, body).build(0, idempotency_key);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Creates an export of `body`: its id, or the status and body of an answer other than `202`.
pub(crate) async fn create_export(
    addr: SocketAddr,
    key: &str,
    body: &'static str,
) -> Result<std::result::Result<String, (u16, String)>> {
    let (status, answer) = request_once(
        addr,
        key,
        http::Method::POST,
        "/api/v1/exports/users",
        Some(body),
        None,
    )
    .await?;
    if status != 202 {
        return Ok(Err((status, answer)));
    }
    let answer: serde_json::Value = serde_json::from_str(&answer)?;
    Ok(Ok(answer["export_id"].as_str().context("export_id")?.to_string()))
}

/// Polls an export every 20 ms until it is neither pending nor processing (ten minutes at
/// most: a limit, not a figure), and returns it as last read.
pub(crate) async fn poll_until_stopped(addr: SocketAddr, key: &str, id: &str) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let path = format!("/api/v1/exports/users/{id}");
        let (status, text) = request_once(addr, key, http::Method::GET, &path, None, None).await?;
        anyhow::ensure!(status == 200, "getExport answered {status}: {text}");
        let export: serde_json::Value = serde_json::from_str(&text)?;
        if !matches!(export["status"].as_str(), Some("pending" | "processing")) {
            return Ok(export);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "export {id} not finished after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `connections` keep-alive connections, each sending requests back to back for `duration`.
pub(crate) async fn load(
    addr: SocketAddr,
    scenario: &Scenario,
    connections: usize,
    duration: Duration,
) -> Result<Outcome> {
    let addr = scenario.target.unwrap_or(addr);
    let started = Instant::now();
    let deadline = started + duration;
    let requests = Arc::new(Requests::new(
        addr,
        &scenario.keys,
        &scenario.method,
        &scenario.path,
        scenario.body,
    ));
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let mut sender = connect(addr).await?;
        let (requests, expect, idempotency) = (requests.clone(), scenario.expect, scenario.idempotency);
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let (mut sent, mut expected) = (0usize, 0u64);
            let mut unexpected = BTreeMap::<u16, u64>::new();
            while Instant::now() < deadline {
                // Connections interleave, so a run goes through every key before reusing one.
                let index = (sent * connections + connection) % requests.authorizations.len();
                sent += 1;
                let idempotency_key = match idempotency {
                    IdempotencyKeys::None => None,
                    IdempotencyKeys::Fresh => Some(uuid::Uuid::new_v4().to_string()),
                    IdempotencyKeys::Known => Some(replay_key(index)),
                };
                let request = requests.build(index, idempotency_key.as_deref());
                let sent_at = Instant::now();
                let status = match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.into_body().collect().await {
                            Ok(_) => status,
                            Err(_) => NO_ANSWER,
                        }
                    }
                    Err(_) => NO_ANSWER,
                };
                if status == expect {
                    latency.saturating_record(sent_at.elapsed().as_micros() as u64);
                    expected += 1;
                } else {
                    *unexpected.entry(status).or_default() += 1;
                    if sender.ready().await.is_err() {
                        match connect(addr).await {
                            Ok(fresh) => sender = fresh,
                            Err(_) => break,
                        }
                    }
                }
            }
            (expected, unexpected, latency)
        }));
    }
    let mut outcome = Outcome {
        expected: 0,
        unexpected: BTreeMap::new(),
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for task in tasks {
        let (expected, unexpected, latency) = task.await?;
        outcome.expected += expected;
        for (status, count) in unexpected {
            *outcome.unexpected.entry(status).or_default() += count;
        }
        outcome.latency.add(latency)?;
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_listening_line_gives_both_addresses() {
        let line = r#"{"timestamp":"2026-11-24T08:38:38.9Z","level":"INFO","message":"API listening","local_addr":"127.0.0.1:41234","dropshot_addr":"127.0.0.1:40001","target":"exports_server::app"}"#;
        let (public, dropshot) = api_listening(line).unwrap();
        assert_eq!(public, "127.0.0.1:41234".parse().unwrap());
        assert_eq!(dropshot, "127.0.0.1:40001".parse().unwrap());
        assert_eq!(
            api_listening(r#"{"message":"request","local_addr":"127.0.0.1:1"}"#),
            None
        );
    }

    #[test]
    fn unexpected_answers_add_up_over_scenarios_and_statuses() {
        let figures = json!({
            "create": {"requests_per_second": 10.0, "unexpected": {"429": 4444, "no_answer": 2}},
            "get": {"requests_per_second": 10.0, "unexpected": {}},
            "peak_rss_mib": 28.5,
        });
        assert_eq!(unexpected_answers(figures.as_object().unwrap()), 4446);
    }
}
