//! The end-to-end test harness. Each test gets its own PostgreSQL database, Redis key prefix,
//! file storage (a temporary directory, or an s3s-fs server of its own with its own bucket)
//! and server, so tests run in parallel and leave nothing behind. Every response the tests
//! receive passes through a recording proxy that validates it against `spec/openapi.yaml`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use exports_server::app::{ApiSettings, RunningApi};
use exports_server::metrics::Metrics;
use exports_server::queue::JobQueue;
use exports_server::storage::{Storage, StorageArgs};
use exports_server::worker::{RunningWorker, WorkerArgs};
use exports_server::{auth, db, queue, users};
use exports_spec::Spec;
use fred::prelude::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
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

/// A database of its own, dropped (even if the test panics) when this is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Result<Self> {
        let name = format!("exports_test_{}", Uuid::new_v4().simple());
        let url = postgres_url(&name);
        db::ensure_database(&url).await?;
        Ok(Self { name, url })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = postgres_url("postgres");
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime, which cannot block: use a thread of our own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client.batch_execute(&statement).await
            })?;
            Ok::<_, anyhow::Error>(())
        })
        .join();
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
    api: Option<RunningApi>,
    worker: Option<RunningWorker>,
    checker: Arc<ResponseChecker>,
    _files: tempfile::TempDir,
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

    async fn start_inner(
        configure: impl FnOnce(&mut ApiSettings),
        server_database: Option<&str>,
        setup: Setup,
    ) -> Result<Self> {
        let database = TestDatabase::create().await?;
        db::migrate(&database.url).await?;
        let pool = db::pool(&database.url, 8)?;
        let server_pool = match server_database {
            Some(url) => db::pool(url, 2)?,
            None => pool.clone(),
        };
        let redis = queue::connect(&redis_url(), 2).await?;
        let redis_prefix = format!("exports:test:{}:", Uuid::new_v4().simple());
        let queue = JobQueue::new(redis.clone(), &redis_prefix);
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
        let storage = Storage::open(&storage_args)?;
        let metrics = Arc::new(Metrics::new());
        // The proxy's address is known first, so that download links go through it too.
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let proxy_addr = proxy.local_addr()?;
        let mut settings = ApiSettings {
            listen: "127.0.0.1:0".parse()?,
            public_url: Some(format!("http://{proxy_addr}")),
            ..ApiSettings::default()
        };
        configure(&mut settings);
        let api = RunningApi::start(
            settings,
            server_pool.clone(),
            queue.clone(),
            storage.clone(),
            metrics.clone(),
        )
        .await?;
        let server_addr = api.local_addr;
        let checker = Arc::new(ResponseChecker::default());
        start_validating_proxy(proxy, server_addr, checker.clone());
        let worker = match setup.worker {
            Some(settings) => Some(
                RunningWorker::start(
                    settings,
                    server_pool,
                    &redis_url(),
                    queue.clone(),
                    storage.clone(),
                    metrics.clone(),
                )
                .await?,
            ),
            None => None,
        };
        Ok(Self {
            database,
            pool,
            redis,
            redis_prefix,
            queue,
            server_addr,
            base_url: format!("http://{proxy_addr}"),
            storage,
            storage_args,
            s3,
            metrics,
            api: Some(api),
            worker,
            checker,
            _files: files,
        })
    }

    /// A new user holding a key with these scopes.
    pub async fn user(&self, scopes: &[&str]) -> Result<TestUser> {
        let client = self.pool.get().await?;
        let email = format!("{}@test.example", Uuid::new_v4().simple());
        let id = users::ensure_user(&client, &email, "Test User").await?;
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let key = auth::issue_key(&client, id, "test", &scopes).await?;
        Ok(TestUser { id, key: key.token })
    }

    pub async fn writer(&self) -> Result<TestUser> {
        self.user(&[auth::SCOPE_READ, auth::SCOPE_WRITE]).await
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
        users::seed_demo_users(&*self.pool.get().await?, count).await
    }

    pub async fn count(&self, sql: &str) -> Result<i64> {
        Ok(self.pool.get().await?.query_one(sql, &[]).await?.get(0))
    }

    /// Entries on the job stream: (entry id, export id).
    pub async fn queued_jobs(&self) -> Result<Vec<(String, String)>> {
        let entries: Vec<(String, std::collections::HashMap<String, String>)> =
            self.redis.xrange(self.queue.stream_key(), "-", "+", None).await?;
        Ok(entries
            .into_iter()
            .map(|(id, fields)| (id, fields.get("export_id").cloned().unwrap_or_default()))
            .collect())
    }

    /// Responses validated against the spec so far.
    pub fn validated_responses(&self) -> usize {
        self.checker.validated.lock().unwrap().len()
    }

    /// Stops the server, checks that every response conformed to the spec, and removes the
    /// test's Redis keys (its database goes with `database`).
    pub async fn finish(mut self) -> Result<()> {
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await;
        }
        if let Some(api) = self.api.take() {
            api.shutdown().await?;
        }
        delete_keys(&self.redis, &self.redis_prefix).await?;
        let violations = self.checker.violations.lock().unwrap().clone();
        anyhow::ensure!(
            violations.is_empty(),
            "responses that break the spec:\n{}",
            violations.join("\n")
        );
        Ok(())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // A test that failed before `finish` still removes its keys.
        let (redis, prefix) = (self.redis.clone(), self.redis_prefix.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { delete_keys(&redis, &prefix).await });
        }
    }
}

/// Deletes every key under a test's prefix (a handful, so `KEYS` is fine here).
async fn delete_keys(redis: &Pool, prefix: &str) -> Result<()> {
    let keys: Vec<String> = redis
        .custom(fred::cmd!("KEYS"), vec![format!("{prefix}*")])
        .await?;
    if !keys.is_empty() {
        let _: i64 = redis.del(keys).await?;
    }
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
) {
    let spec = Arc::new(Spec::bundled());
    let client: HttpClient<_, Incoming> = HttpClient::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (spec, checker, client) = (spec.clone(), checker.clone(), client.clone());
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let (spec, checker, client) = (spec.clone(), checker.clone(), client.clone());
                async move {
                    let response = forward_and_check(&spec, &checker, &client, server, request).await;
                    Ok::<_, Infallible>(response.unwrap_or_else(|error| {
                        checker
                            .violations
                            .lock()
                            .unwrap()
                            .push(format!("proxy failure: {error:#}"));
                        http::Response::builder()
                            .status(599)
                            .body(Full::new(Bytes::new()))
                            .unwrap()
                    }))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
            );
        }
    });
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

/// An S3-compatible server of the test's own: s3s-fs on a free port, over a temporary
/// directory holding one bucket. It can be stopped and restarted (same port, same files) to
/// make storage unreachable for a while; it is killed and its files removed on drop.
pub struct TestS3 {
    pub port: u16,
    pub bucket: String,
    root: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl TestS3 {
    const ACCESS_KEY: &str = "exports-test";
    const SECRET_KEY: &str = "exports-test-secret";

    pub async fn start() -> Result<Self> {
        let root = tempfile::tempdir()?;
        let bucket = format!("exports-{}", &Uuid::new_v4().simple().to_string()[..12]);
        std::fs::create_dir(root.path().join(&bucket))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut s3 = Self {
            port,
            bucket,
            root,
            child: None,
        };
        s3.resume().await?;
        Ok(s3)
    }

    /// Kills the server: requests are refused until `resume`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and files.
    pub async fn resume(&mut self) -> Result<()> {
        let binary = s3s_fs_binary();
        let child = std::process::Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", Self::ACCESS_KEY, "--secret-key", Self::SECRET_KEY])
            .arg(self.root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} (scripts/tools.sh installs it)", binary.display()))?;
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("s3s-fs did not start on port {}", self.port)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.stop();
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

/// Creates an export through the generated client and returns its id.
pub async fn create(
    client: &exports_client::Client,
    request: &exports_client::types::CreateUserExport,
) -> Result<Uuid> {
    Ok(client.create_user_export(request).await?.into_inner().export_id)
}
