//! PostgreSQL: the connection pool, and the migrations (refinery, run under an advisory lock
//! because refinery takes none, with our own rollback scripts because it has no down migrations).

use anyhow::{Context, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Any fixed key: every process that migrates this database takes the same lock.
const MIGRATION_LOCK_KEY: i64 = 0x0065_7870_6f72_7473; // "exports" in ASCII

const POOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Rollback scripts, newest first; each undoes the migration of the same version and removes
/// it from refinery's history.
const ROLLBACKS: &[(i32, &str)] = &[
    (5, include_str!("../../migrations/rollback/R5__api_key_life.sql")),
    (4, include_str!("../../migrations/rollback/R4__worker.sql")),
    (3, include_str!("../../migrations/rollback/R3__exports.sql")),
    (2, include_str!("../../migrations/rollback/R2__api_keys.sql")),
    (1, include_str!("../../migrations/rollback/R1__users.sql")),
];

pub fn pool(database_url: &str, max_size: usize) -> Result<Pool> {
    let config: tokio_postgres::Config = database_url.parse().context("parsing the database URL")?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    // Bounded waits: with PostgreSQL down, requests fail fast (503) instead of hanging.
    Ok(Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .build()?)
}

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, connection) = config.connect(NoTls).await.context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Creates the database named in the URL if it does not exist (connecting to `postgres`).
pub async fn ensure_database(database_url: &str) -> Result<()> {
    let config: tokio_postgres::Config = database_url.parse().context("parsing the database URL")?;
    let name = config
        .get_dbname()
        .context("the database URL names no database")?
        .to_string();
    let mut admin = config.clone();
    admin.dbname("postgres");
    let client = connect(&admin).await?;
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
pub async fn migrate(database_url: &str) -> Result<Vec<String>> {
    let mut client = connect(&database_url.parse()?).await?;
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
pub async fn rollback(database_url: &str, target: i32) -> Result<Vec<i32>> {
    let mut client = connect(&database_url.parse()?).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let result = rollback_locked(&mut client, target).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    result
}

async fn rollback_locked(client: &mut tokio_postgres::Client, target: i32) -> Result<Vec<i32>> {
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
