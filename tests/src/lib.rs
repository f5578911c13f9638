//! The end-to-end test harness. Each test gets its own PostgreSQL database, Redis key prefix,
//! file storage (a temporary directory, or an s3s-fs server of its own with its own bucket)
//! and server, so tests run in parallel and leave nothing behind. Every response the tests
//! receive passes through a recording proxy that validates it against `spec/openapi.yaml`.

pub mod receiver;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use exports_server::api::{ApiSettings, RunningApi};
use exports_server::db::keys;
use exports_server::db::users;
use exports_server::db::{DatabaseArgs, Postgres};
use exports_server::dependencies::Dependencies;
use exports_server::metrics::Metrics;
use exports_server::queue::{JobQueue, Lane, Redis, RedisArgs};
use exports_server::storage::{Storage, StorageArgs};
use exports_server::worker::{RunningWorker, WorkerArgs};
use exports_spec::Spec;
use fred::prelude::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use uuid::Uuid;

/// The PostgreSQL server the tests create their databases in.
pub fn postgres_url(database: &str) -> String {
    let base = std::env::var("EXPORTS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    format!("{base}/{database}")
}

pub fn redis_url() -> String {
    std::env::var("EXPORTS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn redis() -> Result<Redis> {
    Redis::new(&redis_url(), None)
}

/// A database of its own, dropped (even if the test panics) when this is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Result<Self> {
        let name = format!("exports_test_{}", Uuid::new_v4().simple());
        let url = postgres_url(&name);
        Postgres::new(&url, None)?.ensure_database().await?;
        Ok(Self { name, url })
    }

    pub fn postgres(&self) -> Result<Postgres> {
        Postgres::new(&self.url, None)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = postgres_url("postgres");
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        clean_up(async move {
            let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.batch_execute(&statement).await?;
            Ok(())
        });
    }
}

/// Runs a clean-up to its end from `Drop`, also while a test panics. Drop may run inside the
/// test's runtime, which cannot block and may be shutting down (a task spawned there may
/// never run): the clean-up gets a thread and a runtime of its own.
fn clean_up(work: impl std::future::Future<Output = Result<()>> + Send + 'static) {
    let outcome = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(work)
    })
    .join();
    if let Ok(Err(error)) = outcome {
        eprintln!("test clean-up failed: {error:#}");
    }
}

/// A Redis key prefix of the test's own: every key under it is deleted on drop, even when the
/// test fails.
pub struct TestRedisPrefix {
    pub prefix: String,
}

impl TestRedisPrefix {
    pub fn new() -> Self {
        Self {
            prefix: format!("exports:test:{}:", Uuid::new_v4().simple()),
        }
    }
}

impl Default for TestRedisPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedisPrefix {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        clean_up(async move { delete_prefix(&prefix).await });
    }
}

/// A caller of the API: a user and one of their keys.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub key: String,
}

pub struct TestEnv {
    pub database: TestDatabase,
    pub pool: deadpool_postgres::Pool,
    pub redis: Pool,
    pub redis_prefix: String,
    pub queue: JobQueue,
    /// The server's own address; tests talk to `base_url`, the validating proxy in front of it.
    pub server_addr: SocketAddr,
    pub base_url: String,
    /// Where files go: `storage_args` opens the same store from another process.
    pub storage: Storage,
    pub storage_args: StorageArgs,
    /// The test's own S3-compatible server, when it asked for one.
    pub s3: Option<TestS3>,
    pub metrics: Arc<Metrics>,
    /// What the API and the test's workers run on.
    dependencies: Dependencies,
    api: Option<RunningApi>,
    proxy: Option<exports_listener::Serving>,
    worker: Option<RunningWorker>,
    checker: Arc<ResponseChecker>,
    files: tempfile::TempDir,
    // Last, so that the API and worker above have stopped using the keys when they go.
    _redis_keys: TestRedisPrefix,
}

/// What a test needs beyond the API.
#[derive(Default)]
pub struct Setup {
    /// Files in an s3s-fs server of the test's own (otherwise a local directory).
    pub s3: bool,
    /// A worker in the test's process, with these settings.
    pub worker: Option<WorkerArgs>,
}

/// Worker settings for tests: short leases, sweeps and backoffs, so recovery takes seconds.
pub fn quick_worker() -> WorkerArgs {
    WorkerArgs {
        concurrency: 2,
        max_attempts: 4,
        retry_backoff_ms: 200,
        job_timeout_secs: 120,
        lease_secs: 2,
        sweep_interval_secs: 1,
        file_ttl_secs: 3600,
        upload_part_mib: 5,
        // Webhook retries in milliseconds; receivers on loopback (the tests' own).
        webhook_backoff_ms: 50,
        webhook_max_backoff_secs: 1,
        webhook_poll_ms: 20,
        webhook_urls: exports_spec::webhook_url::UrlPolicy {
            allow_private: true,
            ..Default::default()
        },
        // A test that stops its worker with an export held mid-way hands it back at once.
        job_grace_secs: 0,
        ..WorkerArgs::default()
    }
}

impl TestEnv {
    pub async fn start() -> Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts with the default settings as changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut ApiSettings)) -> Result<Self> {
        Self::start_inner(configure, None, Setup::default()).await
    }

    /// A server whose PostgreSQL is unreachable (nothing listens at its address).
    pub async fn start_with_unreachable_postgres() -> Result<Self> {
        Self::start_inner(
            |_| {},
            Some("postgres://postgres@127.0.0.1:1/unreachable"),
            Setup::default(),
        )
        .await
    }

    /// The API with the storage and worker that `setup` asks for.
    pub async fn start_setup(setup: Setup) -> Result<Self> {
        Self::start_inner(|_| {}, None, setup).await
    }

    /// `start_setup`, with the API's settings as changed by `configure`.
    pub async fn start_setup_with(setup: Setup, configure: impl FnOnce(&mut ApiSettings)) -> Result<Self> {
        Self::start_inner(configure, None, setup).await
    }

    async fn start_inner(
        configure: impl FnOnce(&mut ApiSettings),
        server_database: Option<&str>,
        setup: Setup,
    ) -> Result<Self> {
        let database = TestDatabase::create().await?;
        let postgres = database.postgres()?;
        postgres.migrate().await?;
        let redis = redis()?.pool(2).await?;
        let redis_keys = TestRedisPrefix::new();
        let redis_prefix = redis_keys.prefix.clone();
        let files = tempfile::tempdir()?;
        let s3 = if setup.s3 {
            Some(TestS3::start().await?)
        } else {
            None
        };
        let storage_args = match &s3 {
            Some(s3) => s3.args(),
            None => StorageArgs::local(files.path()),
        };
        // What the server runs on, opened as the binary opens it.
        let database_args = DatabaseArgs {
            database_url: server_database.unwrap_or(&database.url).to_string(),
            database_pool_size: 8,
            database_ca_file: None,
        };
        let redis_args = RedisArgs {
            redis_url: redis_url(),
            redis_prefix: redis_prefix.clone(),
            redis_pool_size: 2,
            redis_ca_file: None,
        };
        let dependencies = Dependencies::open(&database_args, 8, &redis_args, &storage_args).await?;
        let pool = match server_database {
            Some(_) => postgres.pool(8)?,
            None => dependencies.pool.clone(),
        };
        // The proxy's address is known first, so that download links go through it too.
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let proxy_addr = proxy.local_addr()?;
        let mut settings = ApiSettings {
            listen: "127.0.0.1:0".parse()?,
            public_url: Some(format!("http://{proxy_addr}")),
            ..ApiSettings::default()
        };
        configure(&mut settings);
        let api = RunningApi::start(settings, &dependencies).await?;
        let server_addr = api.local_addr;
        let checker = Arc::new(ResponseChecker::default());
        let proxy = start_validating_proxy(proxy, server_addr, checker.clone());
        let worker = match setup.worker {
            Some(settings) => Some(RunningWorker::start(settings, &dependencies).await?),
            None => None,
        };
        Ok(Self {
            database,
            pool,
            redis,
            redis_prefix,
            queue: dependencies.queue.clone(),
            server_addr,
            base_url: format!("http://{proxy_addr}"),
            storage: dependencies.storage.clone(),
            storage_args,
            s3,
            metrics: dependencies.metrics.clone(),
            dependencies,
            api: Some(api),
            proxy: Some(proxy),
            worker,
            checker,
            files,
            _redis_keys: redis_keys,
        })
    }

    /// A new user holding a key with these scopes.
    pub async fn user(&self, scopes: &[&str]) -> Result<TestUser> {
        let client = self.pool.get().await?;
        let email = format!("{}@test.example", Uuid::new_v4().simple());
        let id = users::ensure_user(&client, &email, "Test User").await?;
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let key = keys::issue_key(&client, id, "test", &scopes, None).await?;
        Ok(TestUser { id, key: key.token })
    }

    pub async fn writer(&self) -> Result<TestUser> {
        self.user(&[keys::SCOPE_READ, keys::SCOPE_WRITE]).await
    }

    pub fn client(&self, user: &TestUser) -> exports_client::Client {
        self.client_with_key(&user.key)
    }

    pub fn client_with_key(&self, key: &str) -> exports_client::Client {
        exports_client::connect(&self.base_url, key, Duration::from_secs(30)).expect("building the client")
    }

    /// For requests the typed client cannot make (malformed bodies, bad ids, odd headers).
    pub fn raw(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn seed_users(&self, count: i64) -> Result<u64> {
        Ok(users::seed_demo_users(&*self.pool.get().await?, count).await?)
    }

    /// Demo users created at fixed times: user N N minutes before `newest`.
    pub async fn seed_users_until(&self, count: i64, newest: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        Ok(users::seed_demo_users_until(&*self.pool.get().await?, count, newest).await?)
    }

    /// A worker in the test's process, on its database, queue and storage, started now.
    pub async fn start_worker(&self, settings: WorkerArgs) -> Result<RunningWorker> {
        RunningWorker::start(settings, &self.dependencies).await
    }

    /// Everything stored for an export, as the store lists it: the keys under its prefix.
    pub async fn stored_for(&self, export_id: Uuid) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let mut keys: Vec<String> = self
            .storage
            .object_store()
            .list(Some(&Storage::export_prefix(export_id)))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// Uploads under way that a listing of objects does not show: open multipart uploads on
    /// S3 (`TestS3::open_uploads`), and in a local directory the files object_store keeps an
    /// unfinished upload in (`<key>#<n>`, which its own listing leaves out).
    pub fn unfinished_uploads(&self) -> Result<Vec<String>> {
        if let Some(s3) = &self.s3 {
            return s3.open_uploads();
        }
        let mut partial = Vec::new();
        let mut folders = vec![self.storage_args.storage_dir.join("exports")];
        while let Some(folder) = folders.pop() {
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.to_string_lossy().contains('#') {
                    partial.push(path.display().to_string());
                }
            }
        }
        Ok(partial)
    }

    pub async fn count(&self, sql: &str) -> Result<i64> {
        Ok(self.pool.get().await?.query_one(sql, &[]).await?.get(0))
    }

    /// Entries on the job streams, the small lane's first: (entry id, export id).
    pub async fn queued_jobs(&self) -> Result<Vec<(String, String)>> {
        let mut jobs = Vec::new();
        for lane in [Lane::Small, Lane::Bulk] {
            let entries: Vec<(String, std::collections::HashMap<String, String>)> = self
                .redis
                .xrange(self.queue.stream_key(lane), "-", "+", None)
                .await?;
            jobs.extend(
                entries
                    .into_iter()
                    .map(|(id, fields)| (id, fields.get("export_id").cloned().unwrap_or_default())),
            );
        }
        Ok(jobs)
    }

    /// `exports-server work` (the test package's copy, `binary`) on the test's database, Redis
    /// prefix and storage, with `quick_worker`'s timings and one job at a time; its log goes
    /// to `log`. Add arguments, then start it with `ChildProcess::spawn`.
    pub fn worker_command(&self, binary: &str, log: &std::path::Path) -> Result<std::process::Command> {
        self.worker_command_with(binary, log, &quick_worker())
    }

    /// `worker_command` with the timings of `settings`.
    pub fn worker_command_with(
        &self,
        binary: &str,
        log: &std::path::Path,
        settings: &WorkerArgs,
    ) -> Result<std::process::Command> {
        let mut command = self.command(binary, "work", log)?;
        command
            .args(["--lease-secs", &settings.lease_secs.to_string()])
            .args(["--sweep-interval-secs", &settings.sweep_interval_secs.to_string()])
            .args(["--retry-backoff-ms", &settings.retry_backoff_ms.to_string()])
            .args(["--upload-part-mib", &settings.upload_part_mib.to_string()])
            .args(["--concurrency", "1"]);
        Ok(command)
    }

    /// `binary command` on the test's database, Redis (`EXPORTS_REDIS_URL`, which a test may
    /// set again) and prefix, and storage, logging to `log`, with nothing else from the
    /// test's environment.
    fn command(
        &self,
        binary: &str,
        subcommand: &str,
        log: &std::path::Path,
    ) -> Result<std::process::Command> {
        let storage = &self.storage_args;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut command = std::process::Command::new(binary);
        command
            .args(["--database-url", &self.database.url, subcommand])
            .args(["--redis-prefix", &self.redis_prefix])
            .env_clear()
            .env("EXPORTS_REDIS_URL", redis_url())
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(bucket) = &storage.s3_bucket {
            command
                .args(["--s3-bucket", bucket, "--s3-path-style"])
                .args(["--s3-endpoint", storage.s3_endpoint.as_deref().unwrap()])
                .args(["--s3-access-key-id", storage.s3_access_key_id.as_deref().unwrap()])
                .env(
                    "EXPORTS_S3_SECRET_ACCESS_KEY",
                    storage.s3_secret_access_key.as_deref().unwrap(),
                );
        } else {
            command.arg("--storage-dir").arg(&storage.storage_dir);
        }
        Ok(command)
    }

    /// `exports-server serve` (the test package's copy, `binary`) on the test's database, Redis
    /// prefix and storage, listening on a port of its own (`api_address` reads it from `log`).
    /// Add arguments, then start it with `ChildProcess::spawn`.
    pub fn serve_command(&self, binary: &str, log: &std::path::Path) -> Result<std::process::Command> {
        let mut command = self.command(binary, "serve", log)?;
        command.args(["--listen", "127.0.0.1:0"]);
        Ok(command)
    }

    /// Deletes every Redis key of the test, as a `FLUSHALL` or a Redis that lost its data
    /// would (the Redis server is shared, so the test's keys only).
    pub async fn flush_redis(&self) -> Result<()> {
        delete_prefix(&self.redis_prefix).await
    }

    /// What this environment made outside the test's process (database, Redis prefix,
    /// directories, processes), for the test that checks a failed test leaves none behind.
    pub fn made_outside(&self) -> serde_json::Value {
        let mut directories = vec![self.files.path().to_path_buf()];
        let mut processes = Vec::new();
        if let Some(s3) = &self.s3 {
            directories.push(s3.root.path().to_path_buf());
            processes.push(s3.server.id());
        }
        serde_json::json!({
            "database": self.database.name,
            "redis_prefix": self.redis_prefix,
            "directories": directories,
            "processes": processes,
        })
    }

    /// Responses validated against the spec so far.
    pub fn validated_responses(&self) -> usize {
        self.checker.validated.lock().unwrap().len()
    }

    /// Where the server serves `/metrics` apart from the API, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().and_then(RunningApi::metrics_addr)
    }

    /// Client connections open at the server's own address now.
    pub fn open_connections(&self) -> usize {
        self.api.as_ref().map_or(0, RunningApi::open_connections)
    }

    /// Stops the server, checks that every response conformed to the spec, and removes the
    /// test's Redis keys (its database goes with `database`).
    pub async fn finish(mut self) -> Result<()> {
        if let Some(worker) = self.worker.take() {
            worker.shutdown(std::future::pending()).await;
        }
        if let Some(proxy) = self.proxy.take() {
            proxy.shutdown(Duration::from_secs(5)).await;
        }
        if let Some(api) = self.api.take() {
            api.shutdown().await?;
        }
        let violations = self.checker.violations.lock().unwrap().clone();
        anyhow::ensure!(
            violations.is_empty(),
            "responses that break the spec:\n{}",
            violations.join("\n")
        );
        Ok(())
    }
}

/// Deletes every key under a test's prefix (a handful, so `KEYS` is fine here), on a
/// connection of its own.
async fn delete_prefix(prefix: &str) -> Result<()> {
    let redis = redis()?.pool(1).await?;
    let keys: Vec<String> = redis
        .custom(fred::cmd!("KEYS"), vec![format!("{prefix}*")])
        .await?;
    if !keys.is_empty() {
        let _: i64 = redis.del(keys).await?;
    }
    redis.quit().await?;
    Ok(())
}

#[derive(Default)]
struct ResponseChecker {
    validated: Mutex<Vec<String>>,
    violations: Mutex<Vec<String>>,
}

/// A loopback proxy that forwards every request to the server and checks every response
/// against the spec: status documented, media type, required headers, body schema.
fn start_validating_proxy(
    listener: tokio::net::TcpListener,
    server: SocketAddr,
    checker: Arc<ResponseChecker>,
) -> exports_listener::Serving {
    let spec = Arc::new(Spec::bundled());
    let client: HttpClient<_, Incoming> = HttpClient::builder(TokioExecutor::new()).build_http();
    let serving = exports_listener::serve(
        listener,
        exports_listener::Limits::default(),
        move |request, _peer| {
            let (spec, checker, client) = (spec.clone(), checker.clone(), client.clone());
            async move {
                let response = forward_and_check(&spec, &checker, &client, server, request).await;
                response.unwrap_or_else(|error| {
                    checker
                        .violations
                        .lock()
                        .unwrap()
                        .push(format!("proxy failure: {error:#}"));
                    http::Response::builder()
                        .status(599)
                        .body(Full::new(Bytes::new()))
                        .unwrap()
                })
            }
        },
    );
    serving.expect("a bound listener has an address")
}

async fn forward_and_check(
    spec: &Spec,
    checker: &ResponseChecker,
    client: &HttpClient<hyper_util::client::legacy::connect::HttpConnector, Incoming>,
    server: SocketAddr,
    mut request: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>> {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    *request.uri_mut() = format!("http://{server}{path_and_query}").parse()?;
    let response = client
        .request(request)
        .await
        .context("forwarding to the server")?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                value.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let status = parts.status.as_u16();
    // Preflights and unknown routes are outside the spec's operations; the rest must conform.
    if spec.find_operation(&method, &path).is_some() {
        match spec.validate_response(&method, &path, status, &headers, &body) {
            Ok(()) => checker
                .validated
                .lock()
                .unwrap()
                .push(format!("{method} {path} {status}")),
            Err(problems) => checker.violations.lock().unwrap().extend(problems),
        }
    }
    Ok(http::Response::from_parts(parts, Full::new(body)))
}

/// The error envelope of a failed call of the generated client.
pub fn error_of<T>(
    result: Result<T, exports_client::Error<exports_client::types::ErrorResponse>>,
) -> (u16, exports_client::types::ErrorResponse, http::HeaderMap) {
    match result {
        Err(exports_client::Error::ErrorResponse(response)) => {
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            (status, response.into_inner(), headers)
        }
        Err(other) => panic!("expected an error response, got {other:?}"),
        Ok(_) => panic!("expected an error response, got a success"),
    }
}

/// The s3s-fs binary that `scripts/tools.sh` installs.
pub fn s3s_fs_binary() -> std::path::PathBuf {
    match std::env::var_os("EXPORTS_S3S_ROOT") {
        Some(root) => std::path::PathBuf::from(root).join("bin/s3s-fs"),
        None => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/exports/s3s-fs/bin/s3s-fs"),
    }
}

/// An S3-compatible server of the test's own: s3s-fs on a port it picks itself, over a
/// temporary directory holding one bucket, reached through a loopback relay of the test's
/// that can cut it off (`stop`) and restore it (`resume`) to make storage unreachable for a
/// while. The server is killed and its files removed on drop.
pub struct TestS3 {
    pub port: u16,
    pub bucket: String,
    relay: Relay,
    server: ChildProcess,
    root: tempfile::TempDir,
}

impl TestS3 {
    const ACCESS_KEY: &str = "exports-test";
    const SECRET_KEY: &str = "exports-test-secret";

    pub async fn start() -> Result<Self> {
        let root = tempfile::tempdir()?;
        let bucket = format!("exports-{}", &Uuid::new_v4().simple().to_string()[..12]);
        std::fs::create_dir(root.path().join(&bucket))?;
        let binary = s3s_fs_binary();
        let (server, upstream) = ChildProcess::start_listening(
            std::process::Command::new(&binary)
                .args(["--host", "127.0.0.1", "--port", "0"])
                .args(["--access-key", Self::ACCESS_KEY, "--secret-key", Self::SECRET_KEY])
                .arg(root.path())
                .env("RUST_LOG", "s3s_fs=info"),
            &format!("{} (scripts/tools.sh installs it)", binary.display()),
            s3s_fs_listening,
        )?;
        let relay = Relay::start(upstream, true).await?;
        Ok(Self {
            port: relay.port,
            bucket,
            relay,
            server,
            root,
        })
    }

    /// Cuts the server off: open connections are closed, new ones refused, until `resume`.
    pub fn stop(&self) {
        self.relay.cut_off();
    }

    pub fn resume(&self) {
        self.relay.restore();
    }

    /// The bucket goes (it must be empty), as if it was never made, until `make_bucket`.
    pub fn remove_bucket(&self) -> Result<()> {
        Ok(std::fs::remove_dir(self.root.path().join(&self.bucket))?)
    }

    pub fn make_bucket(&self) -> Result<()> {
        Ok(std::fs::create_dir(self.root.path().join(&self.bucket))?)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Multipart uploads opened and not yet completed or aborted, by id. s3s-fs does not answer
    /// `ListMultipartUploads`, so its own record of each (`.upload-<id>.json` beside the
    /// buckets, removed by its completion and abort alike) is read instead.
    pub fn open_uploads(&self) -> Result<Vec<String>> {
        let mut uploads = Vec::new();
        for entry in std::fs::read_dir(self.root.path())? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_prefix(".upload-")
                .and_then(|n| n.strip_suffix(".json"))
            {
                uploads.push(id.to_string());
            }
        }
        Ok(uploads)
    }

    /// A client of the test's own on the bucket, to act on uploads as another party would.
    pub fn client(&self) -> Result<object_store::aws::AmazonS3> {
        Ok(object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region("us-east-1")
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(Self::ACCESS_KEY)
            .with_secret_access_key(Self::SECRET_KEY)
            .build()?)
    }

    pub fn args(&self) -> StorageArgs {
        StorageArgs {
            s3_bucket: Some(self.bucket.clone()),
            s3_endpoint: Some(self.endpoint()),
            s3_access_key_id: Some(Self::ACCESS_KEY.into()),
            s3_secret_access_key: Some(Self::SECRET_KEY.into()),
            s3_path_style: true,
            ..StorageArgs::local(self.root.path().join("unused"))
        }
    }
}

/// The line s3s-fs logs (with `RUST_LOG=s3s_fs=info`) once listening:
/// `… INFO s3s_fs: server is running at http://127.0.0.1:41234`.
pub fn s3s_fs_listening(line: &str) -> Option<SocketAddr> {
    let (_, url) = line.split_once("server is running at http://")?;
    url.split_whitespace().next()?.parse().ok()
}

/// A loopback relay of the test's to a server, which can cut it off (an outage: open
/// connections closed, new ones refused) and restore it; it stops on drop.
pub struct Relay {
    pub port: u16,
    reachable: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(upstream: SocketAddr, reachable: bool) -> Result<Self> {
        let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = relay.local_addr()?.port();
        let (reachable, _) = tokio::sync::watch::channel(reachable);
        let task = tokio::spawn(relay_connections(relay, upstream, reachable.clone()));
        Ok(Self {
            port,
            reachable,
            task,
        })
    }

    pub fn cut_off(&self) {
        self.reachable.send_replace(false);
    }

    pub fn restore(&self) {
        self.reachable.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards each connection to `upstream` while `reachable` holds; closes it as soon as it
/// does not (a cut-off drops open connections too, as an outage would).
async fn relay_connections(
    relay: tokio::net::TcpListener,
    upstream: SocketAddr,
    reachable: tokio::sync::watch::Sender<bool>,
) {
    while let Ok((mut client, _)) = relay.accept().await {
        let mut cut_off = reachable.subscribe();
        if !*cut_off.borrow_and_update() {
            continue; // dropped: the connection is closed at once
        }
        tokio::spawn(async move {
            let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut_off.wait_for(|reachable| !*reachable) => {}
            }
        });
    }
}

/// A child process of a test or a benchmark, killed (and reaped) on drop, however the run
/// ends (a failed assertion, an error, a panic).
pub struct ChildProcess(pub std::process::Child);

impl ChildProcess {
    pub fn spawn(mut command: std::process::Command) -> Result<Self> {
        Ok(Self(command.spawn()?))
    }

    /// Starts `command` (told to listen on port 0) with its stdout piped, and reads its lines
    /// until `listening` finds in one the address it bound. The process picks its port itself,
    /// so no other process can take it between a choice and the bind. A thread then drains the
    /// rest of its output, so a full pipe never stalls it.
    pub fn start_listening<T: Send + 'static>(
        command: &mut std::process::Command,
        what: &str,
        listening: impl Fn(&str) -> Option<T> + Send + 'static,
    ) -> Result<(Self, T)> {
        use std::io::BufRead;
        use std::sync::mpsc::RecvTimeoutError;
        let mut process = Self(
            command
                .stdout(std::process::Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {what}"))?,
        );
        let stdout = process.0.stdout.take().context("stdout")?;
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut output = std::io::BufReader::new(stdout);
            let mut line = String::new();
            while matches!(output.read_line(&mut line), Ok(1..)) {
                if let Some(value) = listening(&line) {
                    let _ = found.send(value);
                    break;
                }
                line.clear();
            }
            // Servers log every request: the rest is copied away in blocks, not parsed.
            let _ = std::io::copy(&mut output, &mut std::io::sink());
        });
        // A generous bound for a process to start: a limit, never what is measured.
        match address.recv_timeout(Duration::from_secs(60)) {
            Ok(value) => Ok((process, value)),
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("{what} exited before listening"),
            Err(RecvTimeoutError::Timeout) => {
                anyhow::bail!("{what} did not say where it listens within 60 s")
            }
        }
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, as an orchestrator stops a process: it stops gracefully.
    pub fn terminate(&self) -> Result<()> {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {} failed", self.id());
        Ok(())
    }

    /// Its exit status, once it has exited, failing after `limit`.
    pub async fn exited(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let mut status = None;
        until(limit, "the process exits", async || {
            status = self.0.try_wait()?;
            Ok(status.is_some())
        })
        .await?;
        Ok(status.expect("exited"))
    }

    /// SIGKILL: no clean-up of any kind.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every object in the store, through its listing API (what a client of the bucket sees).
pub async fn stored_objects(storage: &Storage) -> Result<Vec<(String, u64)>> {
    use futures::TryStreamExt;
    let mut objects: Vec<(String, u64)> = storage
        .object_store()
        .list(Some(&object_store::path::Path::from("exports")))
        .map_ok(|meta| (meta.location.to_string(), meta.size))
        .try_collect()
        .await?;
    objects.sort();
    Ok(objects)
}

/// Waits until `check` holds, polling every 50 ms, failing after `limit`.
pub async fn until(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await? {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Polls `getExport` until `done` says so, failing after `limit`.
pub async fn wait_for_export(
    client: &exports_client::Client,
    export_id: &Uuid,
    limit: Duration,
    done: impl Fn(&exports_client::types::Export) -> bool,
) -> Result<exports_client::types::Export> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let export = client.get_export(export_id).await?.into_inner();
        if done(&export) {
            return Ok(export);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "export {export_id} still {:?} after {limit:?}: {export:?}",
            export.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The body of a successful `downloadExport`, with its headers.
pub async fn download(
    client: &exports_client::Client,
    export_id: &Uuid,
) -> Result<(http::HeaderMap, Vec<u8>)> {
    use futures::TryStreamExt;
    let response = client.download_export(export_id).await?;
    let headers = response.headers().clone();
    let chunks: Vec<Bytes> = response.into_inner().into_inner().try_collect().await?;
    Ok((headers, chunks.concat()))
}

/// Reads the log of an `exports-server` process until a JSON line says where the API
/// listens, failing after `limit`.
pub async fn api_address(log: &std::path::Path, limit: Duration) -> Result<SocketAddr> {
    tokio::time::timeout(limit, async {
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let found = text
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|record| record["message"] == "API listening")
                .and_then(|record| record["local_addr"].as_str()?.parse().ok());
            if let Some(address) = found {
                return address;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "the API did not say where it listens:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

/// The demo key a `dev` process printed to `log`.
pub fn demo_key(log: &std::path::Path) -> Result<String> {
    let output = std::fs::read_to_string(log)?;
    let key = output
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("exk_"))
        .with_context(|| format!("no demo key in:\n{output}"))?;
    Ok(key.to_string())
}

/// Creates a CSV export of every user over plain HTTP (as any client would, without the
/// generated client) on the API at `address`, and polls it until it is neither pending nor
/// processing, failing after `limit`. Returns its URL and its last state.
pub async fn finished_csv_export(
    http: &reqwest::Client,
    address: SocketAddr,
    key: &str,
    limit: Duration,
) -> Result<(String, serde_json::Value)> {
    let api = format!("http://{address}/api/v1/exports/users");
    let created: serde_json::Value = http
        .post(&api)
        .bearer_auth(key)
        .json(&serde_json::json!({"format": "csv"}))
        .send()
        .await?
        .json()
        .await?;
    let export_url = format!("{api}/{}", created["export_id"].as_str().unwrap_or_default());
    let export = tokio::time::timeout(limit, async {
        loop {
            let export: serde_json::Value = http
                .get(&export_url)
                .bearer_auth(key)
                .send()
                .await?
                .json()
                .await?;
            if export["status"] != "pending" && export["status"] != "processing" {
                return anyhow::Ok(export);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .with_context(|| format!("{export_url} not finished after {limit:?}"))??;
    Ok((export_url, export))
}

/// Creates an export through the generated client and returns its id.
pub async fn create(
    client: &exports_client::Client,
    request: &exports_client::types::CreateUserExport,
) -> Result<Uuid> {
    Ok(client
        .create_user_export(None, request)
        .await?
        .into_inner()
        .export_id)
}

/// Sends `head` (a request line and headers) over a raw connection and returns the status and
/// the body: for request targets no HTTP client library sends.
pub async fn raw_request(addr: std::net::SocketAddr, head: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("{head}\r\nHost: exports.test\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line: {answer}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_s3s_fs_listening_line_gives_its_address() {
        let line =
            "  2026-11-24T08:17:21.997344Z  INFO s3s_fs: server is running at http://127.0.0.1:45111\n";
        assert_eq!(
            super::s3s_fs_listening(line),
            Some("127.0.0.1:45111".parse().unwrap())
        );
        assert_eq!(
            super::s3s_fs_listening("  INFO s3s_fs: authentication is enabled"),
            None
        );
    }
}
