//! What the API and the workers run on, opened once from their settings by every way the
//! service starts (the binary's commands and the tests' harness alike): PostgreSQL's pool,
//! Redis and the job queue on it, the file store, and the metrics they all report to.

use std::sync::Arc;

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
    /// Opens them, with a pool of `pool_size` PostgreSQL connections. Redis is connected now;
    /// PostgreSQL's pool connects on first use, so that an unreachable PostgreSQL is a `503`
    /// the API answers, not a failed start.
    pub async fn open(
        database: &DatabaseArgs,
        pool_size: usize,
        redis: &RedisArgs,
        storage: &StorageArgs,
    ) -> Result<Self> {
        let pool = database.postgres()?.pool(pool_size)?;
        let redis_server = redis.redis()?;
        let queue = JobQueue::new(
            redis_server.pool(redis.redis_pool_size).await?,
            &redis.redis_prefix,
        );
        Ok(Self {
            pool,
            redis: redis_server,
            queue,
            storage: Storage::open(storage)?,
            metrics: Arc::new(Metrics::new()),
        })
    }
}
