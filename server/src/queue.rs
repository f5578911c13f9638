//! Redis: the connection pool and the job stream. A job is one stream entry naming an export
//! row; the row in PostgreSQL stays the source of truth.

use anyhow::{Context, Result};
use fred::prelude::*;
use fred::types::Builder;
use std::time::Duration;
use uuid::Uuid;

pub async fn connect(redis_url: &str, pool_size: usize) -> Result<Pool> {
    let config = Config::from_url(redis_url).context("parsing the Redis URL")?;
    let pool = Builder::from_config(config)
        .with_connection_config(|connection| {
            connection.connection_timeout = Duration::from_secs(2);
            connection.internal_command_timeout = Duration::from_secs(2);
        })
        .with_performance_config(|performance| {
            performance.default_command_timeout = Duration::from_secs(2);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build_pool(pool_size)?;
    pool.init().await.context("connecting to Redis")?;
    Ok(pool)
}

#[derive(Clone)]
pub struct JobQueue {
    redis: Pool,
    stream: String,
}

impl JobQueue {
    /// All keys of one deployment (or one test) start with `prefix`.
    pub fn new(redis: Pool, prefix: &str) -> Self {
        Self {
            redis,
            stream: format!("{prefix}jobs"),
        }
    }

    pub fn stream_key(&self) -> &str {
        &self.stream
    }

    /// Appends a job for this export and returns its stream entry id.
    pub async fn enqueue(&self, export_id: Uuid) -> Result<String> {
        let entry_id: String = self
            .redis
            .xadd(
                &self.stream,
                false,
                None,
                "*",
                vec![("export_id", export_id.to_string())],
            )
            .await
            .context("queueing the export job")?;
        Ok(entry_id)
    }

    /// Removes the stream and every job on it (benchmarks and tests clean up with this).
    pub async fn delete_stream(&self) -> Result<()> {
        let _: i64 = self.redis.del(&self.stream).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        let _: String = self.redis.ping(None).await?;
        Ok(())
    }
}
