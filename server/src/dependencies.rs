//! What the API and the workers run on, opened once from their settings by every way the
//! service starts (the binary's commands and the tests' harness alike): PostgreSQL's pool,
//! Redis and the job queue on it, the file store, and the metrics they all report to.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::db::DatabaseArgs;
use crate::metrics::Metrics;
use crate::queue::{JobQueue, Redis, RedisArgs};
use crate::storage::{Storage, StorageArgs};

#[derive(Clone)]
pub struct Dependencies {
    pub pool: deadpool_postgres::Pool,
    pub redis: Redis,
    pub queue: JobQueue,
    pub storage: Storage,
    pub metrics: Arc<Metrics>,
}

impl Dependencies {
    /// Opens them, with a pool of `pool_size` PostgreSQL connections. Nothing waits for a
    /// dependency that does not answer: PostgreSQL's pool connects on first use and Redis in
    /// the background, so that an unreachable one is a `503` the API answers and a wait in
    /// the worker, not a failed start. Settings that cannot work (a malformed URL, a missing
    /// CA file) still stop the start.
    pub async fn open(
        database: &DatabaseArgs,
        pool_size: usize,
        redis: &RedisArgs,
        storage: &StorageArgs,
    ) -> Result<Self> {
        let pool = database.postgres()?.pool(pool_size)?;
        let redis_server = redis.redis()?;
        let queue = JobQueue::new(
            redis_server.pool_connecting(redis.redis_pool_size)?,
            &redis.redis_prefix,
        );
        let dependencies = Self {
            pool,
            redis: redis_server,
            queue,
            storage: Storage::open(storage)?,
            metrics: Arc::new(Metrics::new()),
        };
        // In the background: the API listens at once, whatever its dependencies take to answer.
        tokio::spawn(dependencies.clone().report_unreachable());
        Ok(dependencies)
    }

    /// Asks each dependency once, at start, and says in one log line for each that does not
    /// answer what is wrong (a refused connection, a password, a missing bucket), and that
    /// the process goes on and retries.
    async fn report_unreachable(self) {
        let postgres = crate::db::answers(&self.pool);
        // A connection that fails at once, for the cause (the service's own retry quietly).
        let redis = async {
            let probe = self.redis.pool(1).await?;
            let _ = fred::prelude::ClientLike::quit(&probe).await;
            anyhow::Ok(())
        };
        let storage = self.storage.check();
        let (postgres, redis, storage) = tokio::join!(
            tokio::time::timeout(STARTUP_CHECK_TIMEOUT, postgres),
            tokio::time::timeout(STARTUP_CHECK_TIMEOUT, redis),
            tokio::time::timeout(STARTUP_CHECK_TIMEOUT, storage)
        );
        for (dependency, outcome) in [("postgres", postgres), ("redis", redis), ("storage", storage)] {
            let error = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => format!("{error:#}"),
                Err(_) => format!("no answer within {} s", STARTUP_CHECK_TIMEOUT.as_secs()),
            };
            tracing::error!(dependency, %error, "{dependency} is unreachable; starting anyway and retrying until it answers");
        }
    }
}

/// How long the check at start waits for each dependency.
const STARTUP_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
