//! PostgreSQL: the connection pool, the migrations (refinery, run under an advisory lock
//! because refinery takes none, with our own rollback scripts because it has no down
//! migrations), and one module per table that owns every statement on it. Those return
//! `db::Error`, never an HTTP type: the API answers it with a 500, the worker retries.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use clap::Args;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls;

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL; the database is created by `migrate` and `dev` if missing.
    /// One with a password belongs in the environment: flags show in the process list.
    #[arg(
        long,
        env = "EXPORTS_DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/exports"
    )]
    pub database_url: String,
    /// Connections in the pool.
    #[arg(long, env = "EXPORTS_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,
    /// PEM file of CA certificates trusted, beside the system's, for PostgreSQL's certificate
    /// (with `sslmode=require` in the URL; libpq's `sslrootcert` in the URL works too).
    #[arg(long, env = "EXPORTS_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
}

impl DatabaseArgs {
    pub fn postgres(&self) -> anyhow::Result<Postgres> {
        Postgres::new(&self.database_url, self.database_ca_file.as_deref())
    }
}

pub mod exports;
pub mod keys;
pub mod users;
pub mod webhooks;

/// What a statement of the table modules can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// A row this version cannot read (a value written by a newer version, or corrupted).
    #[error("unreadable row: {0}")]
    Unreadable(String),
    /// A value the table does not take.
    #[error("{0}")]
    Invalid(String),
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Self::Unreadable(error.to_string())
    }
}

/// The result of a statement of the table modules.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether PostgreSQL answers a query on a connection of `pool`.
pub(crate) async fn answers(pool: &deadpool_postgres::Pool) -> anyhow::Result<()> {
    let client = pool.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}

/// A duration as statements take it: milliseconds, multiplied by `interval '1 millisecond'`.
fn milliseconds(duration: std::time::Duration) -> f64 {
    duration.as_millis() as f64
}

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Any fixed key: every process that migrates this database takes the same lock.
const MIGRATION_LOCK_KEY: i64 = 0x0065_7870_6f72_7473; // "exports" in ASCII

const POOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Rollback scripts, newest first; each undoes the migration of the same version and removes
/// it from refinery's history.
const ROLLBACKS: &[(i32, &str)] = &[
    (
        15,
        include_str!("../../../migrations/rollback/R15__resume_checkpoints.sql"),
    ),
    (
        14,
        include_str!("../../../migrations/rollback/R14__file_options.sql"),
    ),
    (
        13,
        include_str!("../../../migrations/rollback/R13__trace_context.sql"),
    ),
    (12, include_str!("../../../migrations/rollback/R12__file_key.sql")),
    (
        11,
        include_str!("../../../migrations/rollback/R11__webhook_delivery_leases.sql"),
    ),
    (
        10,
        include_str!("../../../migrations/rollback/R10__nothing_left_behind.sql"),
    ),
    (
        9,
        include_str!("../../../migrations/rollback/R9__webhook_deliveries_without_holds.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/rollback/R8__webhook_deliveries.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/rollback/R7__webhook_endpoints.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/rollback/R6__idempotency_keys.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/rollback/R5__api_key_life.sql"),
    ),
    (4, include_str!("../../../migrations/rollback/R4__worker.sql")),
    (3, include_str!("../../../migrations/rollback/R3__exports.sql")),
    (2, include_str!("../../../migrations/rollback/R2__api_keys.sql")),
    (1, include_str!("../../../migrations/rollback/R1__users.sql")),
];

/// One PostgreSQL database: its connection settings and, when the URL asks for TLS
/// (`sslmode=require`), the verifying TLS connector.
#[derive(Clone)]
pub struct Postgres {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl Postgres {
    /// Reads a URL or key-value connection string. TLS follows its `sslmode`: `require` (and
    /// libpq's `verify-ca` and `verify-full`, which are what `require` does here) verifies
    /// the server's certificate and host name against the system's CAs and `ca_file` (or the
    /// URL's `sslrootcert`); `disable` and `prefer` (the default) connect without TLS, since
    /// an unverified fallback would not stop an active attacker.
    pub fn new(database_url: &str, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let (database_url, url_ca_file) = libpq_tls_options(database_url)?;
        let mut config: tokio_postgres::Config = database_url.parse().context("parsing the database URL")?;
        let ca_file = match (ca_file, &url_ca_file) {
            (Some(_), Some(_)) => {
                bail!("the database CA file is given twice: by the flag and by the URL's sslrootcert")
            }
            (Some(path), None) => Some(path),
            (None, url_ca_file) => url_ca_file.as_deref(),
        };
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Some(MakeRustlsConnect::new(tls::client_config("PostgreSQL", ca_file)?)),
            _ => {
                ensure!(
                    ca_file.is_none(),
                    "a database CA file is given but the database URL does not ask for TLS (add sslmode=require)"
                );
                config.ssl_mode(SslMode::Disable);
                for host in config.get_hosts() {
                    if let Host::Tcp(host) = host {
                        if !tls::is_loopback(host) {
                            tracing::warn!(%host, "PostgreSQL is reached without TLS; add sslmode=require to the database URL");
                        }
                    }
                }
                None
            }
        };
        Ok(Postgres { config, tls })
    }

    pub fn database_name(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    pub fn pool(&self, max_size: usize) -> anyhow::Result<Pool> {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &self.tls {
            Some(tls) => Manager::from_config(self.config.clone(), tls.clone(), manager_config),
            None => Manager::from_config(self.config.clone(), NoTls, manager_config),
        };
        // Bounded waits: with PostgreSQL down, requests fail fast (503) instead of hanging.
        Ok(Pool::builder(manager)
            .max_size(max_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()?)
    }

    /// One connection outside the pool (migrations hold theirs for a long time).
    async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.connect_to(&self.config).await
    }

    async fn connect_to(&self, config: &tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = config
                    .connect(tls.clone())
                    .await
                    .context("connecting to PostgreSQL")?;
                tokio::spawn(log_connection_end(connection));
                client
            }
            None => {
                let (client, connection) = config.connect(NoTls).await.context("connecting to PostgreSQL")?;
                tokio::spawn(log_connection_end(connection));
                client
            }
        };
        Ok(client)
    }

    /// Creates the database named in the URL if it does not exist (connecting to `postgres`).
    pub async fn ensure_database(&self) -> anyhow::Result<()> {
        let name = self
            .database_name()
            .context("the database URL names no database")?
            .to_string();
        let mut admin = self.config.clone();
        admin.dbname("postgres");
        let client = self.connect_to(&admin).await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists {
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            match client.execute(&format!("CREATE DATABASE {quoted}"), &[]).await {
                Ok(_) => tracing::info!(database = %name, "created database"),
                // Another process created it at the same moment.
                Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
                Err(error) => return Err(error).context("creating the database"),
            }
        }
        Ok(())
    }

    /// Applies pending migrations; concurrent callers wait for each other on the advisory lock.
    pub async fn migrate(&self) -> anyhow::Result<Vec<String>> {
        let mut client = self.connect().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await?;
        let report = embedded::migrations::runner().run_async(&mut client).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
            .await?;
        let applied = report
            .context("applying migrations")?
            .applied_migrations()
            .iter()
            .map(|m| m.to_string())
            .collect();
        Ok(applied)
    }

    /// Undoes applied migrations newer than `target` (0 undoes all), newest first.
    pub async fn rollback(&self, target: i32) -> anyhow::Result<Vec<i32>> {
        let mut client = self.connect().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await?;
        let result = rollback_locked(&mut client, target).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
            .await?;
        result
    }
}

async fn log_connection_end<C: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(
    connection: C,
) {
    if let Err(error) = connection.await {
        tracing::warn!(%error, "PostgreSQL connection closed");
    }
}

/// libpq's TLS options that tokio-postgres does not read, in a URL: `sslmode=verify-ca` and
/// `verify-full` become `require` (which verifies as `verify-full` does), and `sslrootcert`
/// is taken out as the CA file (`system`, libpq's word for the system's CAs, as none).
fn libpq_tls_options(database_url: &str) -> anyhow::Result<(String, Option<PathBuf>)> {
    let Ok(mut url) = url::Url::parse(database_url) else {
        return Ok((database_url.to_string(), None)); // a key-value string: tokio-postgres reads it
    };
    if !matches!(url.scheme(), "postgres" | "postgresql") || url.query().is_none() {
        return Ok((database_url.to_string(), None));
    }
    let mut ca_file = None;
    let mut pairs = Vec::new();
    for (key, value) in url.query_pairs() {
        match (&*key, &*value) {
            ("sslrootcert", "system") => {}
            ("sslrootcert", path) => ca_file = Some(PathBuf::from(path)),
            ("sslmode", "verify-ca" | "verify-full") => pairs.push((key.to_string(), "require".to_string())),
            _ => pairs.push((key.to_string(), value.to_string())),
        }
    }
    url.query_pairs_mut().clear().extend_pairs(&pairs);
    if pairs.is_empty() {
        url.set_query(None);
    }
    Ok((url.to_string(), ca_file))
}

async fn rollback_locked(client: &mut tokio_postgres::Client, target: i32) -> anyhow::Result<Vec<i32>> {
    let history = client
        .query_opt("SELECT to_regclass('refinery_schema_history') IS NOT NULL", &[])
        .await?
        .map(|row| row.get::<_, bool>(0))
        .unwrap_or(false);
    if !history {
        return Ok(Vec::new());
    }
    let applied: Vec<i32> = client
        .query(
            "SELECT version FROM refinery_schema_history ORDER BY version DESC",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut undone = Vec::new();
    for version in applied.into_iter().filter(|version| *version > target) {
        let (_, script) = ROLLBACKS
            .iter()
            .find(|(v, _)| *v == version)
            .with_context(|| format!("no rollback script for migration {version}"))?;
        let transaction = client.transaction().await?;
        transaction
            .batch_execute(script)
            .await
            .with_context(|| format!("rolling back migration {version}"))?;
        transaction.commit().await?;
        undone.push(version);
    }
    Ok(undone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_options_are_read() {
        let (url, ca_file) = libpq_tls_options(
            "postgres://app:secret@db.example.com:5432/exports?sslmode=verify-full&sslrootcert=/etc/exports/ca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://app:secret@db.example.com:5432/exports?sslmode=require&connect_timeout=5"
        );
        assert_eq!(ca_file, Some(PathBuf::from("/etc/exports/ca.pem")));
        let (url, ca_file) = libpq_tls_options("postgresql://db/exports?sslrootcert=system").unwrap();
        assert_eq!((url.as_str(), ca_file), ("postgresql://db/exports", None));
        let key_value = "host=db dbname=exports sslmode=require";
        assert_eq!(
            libpq_tls_options(key_value).unwrap(),
            (key_value.to_string(), None)
        );
    }

    #[test]
    fn tls_follows_sslmode() {
        assert!(
            Postgres::new("postgres://db.example.com/exports?sslmode=require", None)
                .unwrap()
                .tls
                .is_some()
        );
        let prefer = Postgres::new("postgres://db.example.com/exports", None).unwrap();
        assert!(prefer.tls.is_none());
        assert_eq!(prefer.config.get_ssl_mode(), SslMode::Disable);
        let error = Postgres::new(
            "postgres://db/exports?sslmode=disable",
            Some(Path::new("/ca.pem")),
        )
        .err()
        .unwrap();
        assert!(error.to_string().contains("does not ask for TLS"), "{error}");
        let error = Postgres::new(
            "postgres://db/exports?sslmode=require&sslrootcert=/a.pem",
            Some(Path::new("/b.pem")),
        )
        .err()
        .unwrap();
        assert!(error.to_string().contains("given twice"), "{error}");
    }

    #[test]
    fn every_migration_has_a_rollback() {
        let versions: Vec<i32> = embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|m| m.version())
            .collect();
        assert!(!versions.is_empty());
        for version in versions {
            assert!(
                ROLLBACKS.iter().any(|(v, _)| *v == version),
                "migration {version} has no rollback"
            );
        }
    }
}
