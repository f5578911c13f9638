//! TLS to PostgreSQL and Redis (issue 10, item 5), against a PostgreSQL and a Redis of the
//! test's own that take TLS connections only, with certificates for `localhost` from CAs the
//! test makes: the whole flow (`dev`: migrations, API, worker) runs over `sslmode=require`
//! and `rediss://` given the CA files, and a certificate that is not trusted, or not for the
//! host connected to, is refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use exports_server::db::Postgres;
use exports_server::queue::{JobQueue, Redis};
use exports_tests::tls::{TlsPostgres, TlsRedis};
use exports_tests::{api_address, demo_key, finished_csv_export, ChildProcess};
use fred::prelude::*;

const BINARY: &str = env!("CARGO_BIN_EXE_exports-server-under-test");
/// A generous upper bound for anything that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(60);

/// Whether the session on `pool`'s connection is encrypted, as PostgreSQL sees it.
async fn session_uses_tls(pool: &deadpool_postgres::Pool) -> anyhow::Result<bool> {
    let client = pool.get().await?;
    let row = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn the_service_runs_on_postgres_and_redis_over_tls() -> anyhow::Result<()> {
    let postgres = TlsPostgres::start()?;
    let redis = TlsRedis::start()?;
    let files = tempfile::tempdir()?;
    let database_url = postgres.url("localhost", "exports", "sslmode=require");
    let redis_url = redis.url("rediss", "localhost");

    let log_path = files.path().join("dev.log");
    let log = std::fs::File::create(&log_path)?;
    let mut dev = Command::new(BINARY);
    dev.arg("--database-ca-file")
        .arg(&postgres.certificates.ca_file)
        .args(["dev", "--listen", "127.0.0.1:0", "--demo-users", "20"])
        .arg("--redis-ca-file")
        .arg(&redis.certificates.ca_file)
        .arg("--storage-dir")
        .arg(files.path().join("files"))
        .env_clear()
        .env("EXPORTS_DATABASE_URL", &database_url)
        .env("EXPORTS_REDIS_URL", &redis_url)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone()?)
        .stderr(log);
    let _dev = ChildProcess::spawn(dev)?;
    let address = api_address(&log_path, PROMPTLY).await?;
    let key = demo_key(&log_path)?;

    let http = reqwest::Client::new();
    let ready = http.get(format!("http://{address}/health/ready")).send().await?;
    assert_eq!(ready.status(), 200, "{}", ready.text().await?);
    let (export_url, export) = finished_csv_export(&http, address, &key, PROMPTLY).await?;
    assert_eq!(export["status"], "done", "{export}");
    let csv = http
        .get(format!("{export_url}/download"))
        .bearer_auth(&key)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;

    // What the service wrote went to these servers, over TLS.
    let database = Postgres::new(&database_url, Some(&postgres.certificates.ca_file))?.pool(1)?;
    assert!(session_uses_tls(&database).await?);
    let users: i64 = database
        .get()
        .await?
        .query_one("SELECT count(*) FROM users", &[])
        .await?
        .get(0);
    assert!(users > 20, "{users}");
    assert_eq!(
        csv.lines().count() as i64,
        users + 1,
        "a header and one row per user"
    );
    let jobs = Redis::new(&redis_url, Some(&redis.certificates.ca_file))?
        .pool(1)
        .await?;
    // The service's few users make small exports: their lane's stream.
    let stream_key = JobQueue::new(jobs.clone(), "exports:")
        .stream_key(exports_server::queue::Lane::Small)
        .to_string();
    let stream_exists: bool = jobs.exists(&stream_key).await?;
    assert!(stream_exists, "the job stream is on the TLS Redis");
    Ok(())
}

/// Connects to `url`, trusting `ca_file` too; whether the session is encrypted.
async fn connect(url: String, ca_file: Option<&Path>) -> anyhow::Result<bool> {
    let pool = Postgres::new(&url, ca_file)?.pool(1)?;
    session_uses_tls(&pool).await
}

#[tokio::test]
async fn postgres_certificates_are_verified() -> anyhow::Result<()> {
    let server = TlsPostgres::start()?;
    let ca_file = server.certificates.ca_file.as_path();

    // Trusted through the flag, or through libpq's own URL options.
    assert!(
        connect(
            server.url("localhost", "postgres", "sslmode=require"),
            Some(ca_file)
        )
        .await?
    );
    let libpq_style = format!("sslmode=verify-full&sslrootcert={}", ca_file.display());
    assert!(connect(server.url("localhost", "postgres", &libpq_style), None).await?);

    // A CA the client does not know, or a certificate for another host name: refused.
    let unknown_ca = connect(server.url("localhost", "postgres", "sslmode=require"), None)
        .await
        .unwrap_err();
    assert!(
        format!("{unknown_ca:#}").contains("UnknownIssuer"),
        "{unknown_ca:#}"
    );
    let wrong_name = connect(
        server.url("127.0.0.1", "postgres", "sslmode=require"),
        Some(ca_file),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{wrong_name:#}").contains("not valid for name"),
        "{wrong_name:#}"
    );
    // And this server takes nothing but TLS (the premise of the other checks).
    let plain = connect(server.url("localhost", "postgres", "sslmode=disable"), None)
        .await
        .unwrap_err();
    assert!(format!("{plain:#}").contains("pg_hba.conf"), "{plain:#}");

    // The command line refuses a CA file for a connection without TLS, before connecting.
    let refused = Command::new(BINARY)
        .args([
            "--database-url",
            &server.url("localhost", "postgres", "sslmode=disable"),
        ])
        .arg("--database-ca-file")
        .arg(ca_file)
        .arg("migrate")
        .env_clear()
        .output()?;
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(said.contains("does not ask for TLS"), "{said}");
    Ok(())
}

/// PING through a pool on `url`, trusting `ca_file` too.
async fn ping(url: String, ca_file: Option<&Path>) -> anyhow::Result<String> {
    let redis = Redis::new(&url, ca_file)?;
    let pool = tokio::time::timeout(PROMPTLY, redis.pool(1)).await??;
    Ok(pool.ping(None).await?)
}

#[tokio::test]
async fn redis_certificates_are_verified() -> anyhow::Result<()> {
    let server = TlsRedis::start()?;
    let ca_file = server.certificates.ca_file.as_path();

    assert_eq!(
        ping(server.url("rediss", "localhost"), Some(ca_file)).await?,
        "PONG"
    );
    let unknown_ca = ping(server.url("rediss", "localhost"), None).await.unwrap_err();
    assert!(
        format!("{unknown_ca:#}").contains("UnknownIssuer"),
        "{unknown_ca:#}"
    );
    let wrong_name = ping(server.url("rediss", "127.0.0.1"), Some(ca_file))
        .await
        .unwrap_err();
    assert!(
        format!("{wrong_name:#}").contains("NotValidForName"),
        "{wrong_name:#}"
    );
    let error = Redis::new(&server.url("redis", "localhost"), Some(ca_file))
        .err()
        .unwrap();
    assert!(error.to_string().contains("does not ask for TLS"), "{error}");
    Ok(())
}
