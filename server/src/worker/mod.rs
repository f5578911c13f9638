//! The export worker: takes jobs off the Redis stream, writes each export's file to storage and
//! records the outcome in PostgreSQL, the source of truth.
//!
//! Reliability, in short:
//! - **Leases.** Taking a job is one conditional `UPDATE` that bumps `attempts` and sets a lease;
//!   every later write (progress, `done`, retry, `failed`) is conditional on that attempt still
//!   holding the row as `processing`. A second run of the same job therefore changes nothing,
//!   and a cancel (which moves the row out of `processing`) is noticed within a second.
//! - **Dead workers.** A running job renews its lease and its stream entry every second. A
//!   worker that died stops renewing: another takes its entry over (`XAUTOCLAIM`) once it has
//!   been idle for a lease, and its lease has expired by then.
//! - **Lost queue.** Redis keeps nothing on disk. The sweeper queues again any export that is
//!   due (pending, or processing with an expired lease) and has no entry on the stream.
//! - **Retries.** A failed attempt aborts its upload and puts the export back to `pending` with
//!   a `retry_at` (exponential backoff with equal jitter); the sweeper queues it then. After the
//!   last attempt, or past the time limit, it is `failed` with a message for the user.
//! - **Expiry.** The sweeper deletes the files of exports past `expires_at` and marks them
//!   `expired`.
//!
//! Its tasks, each in its file: `jobs` (the job loop and its attempts), `lease` (renewing a
//! running job's lease), `sweeper` (the periodic sweep) and `webhooks` (delivering events).

mod jobs;
mod lease;
mod settings;
mod sweeper;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::dependencies::Dependencies;
use crate::metrics::Metrics;
use crate::queue::JobQueue;
use crate::storage::Storage;
pub use settings::WorkerArgs;

/// How long a blocking read waits on the stream before checking for stale jobs and shutdown.
const READ_BLOCK: Duration = Duration::from_secs(1);

/// What the worker's tasks share.
#[derive(Clone)]
struct Shared {
    pool: deadpool_postgres::Pool,
    queue: JobQueue,
    storage: Storage,
    metrics: Arc<Metrics>,
    settings: Arc<WorkerArgs>,
    /// This process's name in the stream's consumer group, and as the sweep lock's owner.
    consumer: String,
    /// Jobs deferred since this process last took one (`jobs::DEFERRALS_BEFORE_PAUSE`).
    deferred_in_a_row: Arc<std::sync::atomic::AtomicU32>,
}

pub struct RunningWorker {
    /// Set on shutdown: take no new job, delivery or sweep.
    stop: watch::Sender<bool>,
    /// Set when the grace is over: interrupt the running jobs and hand them back.
    interrupt: watch::Sender<bool>,
    grace: Duration,
    tasks: JoinSet<()>,
}

impl RunningWorker {
    pub async fn start(settings: WorkerArgs, dependencies: &Dependencies) -> Result<Self> {
        let Dependencies {
            pool,
            redis,
            queue,
            storage,
            metrics,
        } = dependencies.clone();
        if let Err(error) = queue.ensure_group().await {
            // The job loop makes the group as it reads, once Redis answers.
            tracing::debug!(error = %format!("{error:#}"), "the job stream's group is not there yet");
        }
        let reader = redis.dedicated(READ_BLOCK, true).await?;
        let consumer = format!(
            "{}-{}-{}",
            hostname(),
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        tracing::info!(%consumer, storage = storage.describe(), concurrency = settings.concurrency, "worker started");
        let grace = Duration::from_secs(settings.job_grace_secs);
        let shared = Shared {
            pool,
            queue,
            storage,
            metrics,
            settings: Arc::new(settings),
            consumer,
            deferred_in_a_row: Arc::default(),
        };
        let (stop, stopped) = watch::channel(false);
        let (interrupt, interrupted) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(jobs::take_jobs(
            shared.clone(),
            reader,
            stopped.clone(),
            interrupted,
        ));
        tasks.spawn(webhooks::deliver_webhooks(shared.clone(), stopped.clone()));
        tasks.spawn(sweeper::sweep(shared, stopped));
        Ok(Self {
            stop,
            interrupt,
            grace,
            tasks,
        })
    }

    /// Stops taking jobs, and gives the running ones the grace period (`job_grace_secs`) to
    /// finish, cut short when `cut_short` resolves (a second signal). Those still running
    /// then are interrupted and their exports handed back to the queue for another worker
    /// (their attempt does not count), with their checkpoints where their files keep them,
    /// their uploads aborted where not.
    pub async fn shutdown(mut self, cut_short: impl std::future::Future<Output = ()>) {
        let _ = self.stop.send(true);
        tracing::info!(
            grace_seconds = self.grace.as_secs(),
            "shutting down: taking no new jobs; running ones are handed back if not done by then (signal again to hand them back now)"
        );
        let finished = {
            let tasks = &mut self.tasks;
            let all_done = async { while tasks.join_next().await.is_some() {} };
            tokio::select! {
                () = all_done => true,
                () = tokio::time::sleep(self.grace) => false,
                () = cut_short => false,
            }
        };
        if !finished {
            tracing::info!("shutting down: handing running jobs back to the queue");
            let _ = self.interrupt.send(true);
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "worker".into())
}
