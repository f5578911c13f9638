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

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use fred::prelude::ClientLike;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::db::exports::{self, FinishedFile, LeftUpload, Taken};
use crate::db::webhooks;
use crate::export_file::{finish_upload, write_export, Progress, Upload};
use crate::metrics::Metrics;
use crate::model::{ExportFormat, UserExportFilters};
use crate::queue::{Job, JobQueue, Redis};
use crate::storage::{Storage, StorageFailure, UploadOpened};
use crate::webhook_delivery::{self, DeliverySettings};
use exports_spec::webhook_url::UrlPolicy;
use exports_spec::webhooks::Retries;

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Jobs this process runs at once.
    #[arg(long, env = "EXPORTS_WORKER_CONCURRENCY", default_value_t = WorkerArgs::default().concurrency)]
    pub concurrency: usize,
    /// Attempts per export before it is `failed` (a crashed worker's attempt counts).
    #[arg(long, env = "EXPORTS_MAX_ATTEMPTS", default_value_t = WorkerArgs::default().max_attempts)]
    pub max_attempts: i32,
    /// Backoff before the first retry, doubled for each later one (with jitter), in ms.
    #[arg(long, env = "EXPORTS_RETRY_BACKOFF_MS", default_value_t = WorkerArgs::default().retry_backoff_ms)]
    pub retry_backoff_ms: u64,
    /// Time limit of one attempt, in seconds; past it the export is `failed`.
    #[arg(long, env = "EXPORTS_JOB_TIMEOUT_SECS", default_value_t = WorkerArgs::default().job_timeout_secs)]
    pub job_timeout_secs: u64,
    /// How long a job stays with a worker that stopped renewing it (crashed), in seconds.
    #[arg(long, env = "EXPORTS_LEASE_SECS", default_value_t = WorkerArgs::default().lease_secs)]
    pub lease_secs: u64,
    /// How often the sweeper runs (re-queueing lost jobs and due retries, deleting expired files).
    #[arg(long, env = "EXPORTS_SWEEP_INTERVAL_SECS", default_value_t = WorkerArgs::default().sweep_interval_secs)]
    pub sweep_interval_secs: u64,
    /// How long finished files are kept, in seconds.
    #[arg(long, env = "EXPORTS_FILE_TTL_SECS", default_value_t = WorkerArgs::default().file_ttl_secs)]
    pub file_ttl_secs: u64,
    /// Size of the upload's parts, in MiB (S3 needs at least 5).
    #[arg(long, env = "EXPORTS_UPLOAD_PART_MIB", default_value_t = WorkerArgs::default().upload_part_mib)]
    pub upload_part_mib: usize,
    /// Backoff after a webhook delivery's first failed attempt, doubled for each later one
    /// (with equal jitter), in ms.
    #[arg(long, env = "EXPORTS_WEBHOOK_BACKOFF_MS", default_value_t = WorkerArgs::default().webhook_backoff_ms)]
    pub webhook_backoff_ms: u64,
    /// The longest backoff between two attempts of a webhook delivery, in seconds.
    #[arg(long, env = "EXPORTS_WEBHOOK_MAX_BACKOFF_SECS", default_value_t = WorkerArgs::default().webhook_max_backoff_secs)]
    pub webhook_max_backoff_secs: u64,
    /// How long after its event a webhook delivery is still attempted, in seconds.
    #[arg(long, env = "EXPORTS_WEBHOOK_RETRY_FOR_SECS", default_value_t = WorkerArgs::default().webhook_retry_for_secs, value_parser = clap::value_parser!(u64).range(86400..))]
    pub webhook_retry_for_secs: u64,
    /// How long delivered and given-up webhook deliveries (each holding a snapshot of its
    /// export) are kept, in days; the sweeper deletes older ones.
    #[arg(long, env = "EXPORTS_WEBHOOK_DELIVERY_RETENTION_DAYS", default_value_t = WorkerArgs::default().webhook_delivery_retention_days, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_delivery_retention_days: u64,
    /// Webhook deliveries this process attempts at once.
    #[arg(long, env = "EXPORTS_WEBHOOK_CONCURRENCY", default_value_t = WorkerArgs::default().webhook_concurrency)]
    pub webhook_concurrency: usize,
    /// Webhook deliveries attempted at once for one endpoint, across the workers: a slow or
    /// failing endpoint holds at most this many of the attempts in flight.
    #[arg(long, env = "EXPORTS_WEBHOOK_ENDPOINT_CONCURRENCY", default_value_t = WorkerArgs::default().webhook_endpoint_concurrency)]
    pub webhook_endpoint_concurrency: usize,
    /// How often an idle worker looks for due webhook deliveries, in ms.
    #[arg(long, env = "EXPORTS_WEBHOOK_POLL_MS", default_value_t = WorkerArgs::default().webhook_poll_ms)]
    pub webhook_poll_ms: u64,
    /// From `--webhooks-allow-private` (shared with the API).
    #[arg(skip)]
    pub webhook_urls: UrlPolicy,
    /// Fault injection for tests: every export holds once this many rows are written, until
    /// it is cancelled, interrupted or timed out (see `export_file::Progress`).
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub hold_after_rows: Option<u64>,
}

/// Every default of the worker, stated once: each flag's default is read from here.
impl Default for WorkerArgs {
    fn default() -> Self {
        Self {
            concurrency: 2,
            max_attempts: 4,
            retry_backoff_ms: 2000,
            job_timeout_secs: 600,
            lease_secs: 30,
            sweep_interval_secs: 5,
            file_ttl_secs: 24 * 3600,
            upload_part_mib: 8,
            webhook_backoff_ms: 5000,
            webhook_max_backoff_secs: 3600,
            webhook_retry_for_secs: 24 * 3600,
            webhook_delivery_retention_days: 30,
            webhook_concurrency: 512,
            webhook_endpoint_concurrency: 32,
            webhook_poll_ms: 200,
            webhook_urls: UrlPolicy::default(),
            #[cfg(feature = "fault-injection")]
            hold_after_rows: None,
        }
    }
}

impl WorkerArgs {
    fn webhook_delivery(&self) -> DeliverySettings {
        DeliverySettings {
            policy: self.webhook_urls.clone(),
            retries: Retries {
                first_backoff: Duration::from_millis(self.webhook_backoff_ms),
                max_backoff: Duration::from_secs(self.webhook_max_backoff_secs),
                retry_for: Duration::from_secs(self.webhook_retry_for_secs),
            },
            concurrency: self.webhook_concurrency.max(1),
            per_endpoint: self.webhook_endpoint_concurrency.max(1),
            poll: Duration::from_millis(self.webhook_poll_ms.max(1)),
        }
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1))
    }

    /// A job is renewed this often, and so its progress is recorded this often.
    fn heartbeat(&self) -> Duration {
        (self.lease() / 3).min(Duration::from_secs(1))
    }

    /// Backoff before attempt `attempt + 1` (`exports_spec::backoff`), so that exports failing
    /// together (a storage outage) do not retry together.
    fn backoff(&self, attempt: i32) -> Duration {
        exports_spec::backoff::equal_jitter(
            Duration::from_millis(self.retry_backoff_ms),
            attempt.max(1) as u32,
            MAX_RETRY_BACKOFF,
        )
    }
}

/// The longest backoff between two attempts of an export.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// How long a blocking read waits on the stream before checking for stale jobs and shutdown.
const READ_BLOCK: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Shared {
    pool: deadpool_postgres::Pool,
    queue: JobQueue,
    storage: Storage,
    metrics: Arc<Metrics>,
    settings: Arc<WorkerArgs>,
    consumer: String,
}

pub struct RunningWorker {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningWorker {
    pub async fn start(
        settings: WorkerArgs,
        pool: deadpool_postgres::Pool,
        redis: &Redis,
        queue: JobQueue,
        storage: Storage,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        queue.ensure_group().await?;
        let reader = redis.dedicated(READ_BLOCK).await?;
        let consumer = format!(
            "{}-{}-{}",
            hostname(),
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        tracing::info!(%consumer, storage = storage.describe(), concurrency = settings.concurrency, "worker started");
        let shared = Shared {
            pool,
            queue,
            storage,
            metrics,
            settings: Arc::new(settings),
            consumer,
        };
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(take_jobs(shared.clone(), reader, stopped.clone()));
        tasks.spawn(deliver_webhooks(shared.clone(), stopped.clone()));
        tasks.spawn(sweep(shared, stopped));
        Ok(Self { stop, tasks })
    }

    /// Stops taking jobs; running ones are interrupted, their uploads aborted and their
    /// exports handed back to the queue for another worker (their attempt does not count).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Delivers due webhook events until stopped (`webhook_delivery::deliver`): up to
/// `webhook_concurrency` attempts at once, at most `webhook_endpoint_concurrency` per endpoint.
/// Attempts in flight when the worker stops are finished (each takes at most 10 seconds).
async fn deliver_webhooks(shared: Shared, stopped: watch::Receiver<bool>) {
    let settings = shared.settings.webhook_delivery();
    let http = match webhook_delivery::client(&settings.policy) {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "webhooks: no HTTP client; nothing will be delivered");
            return;
        }
    };
    webhook_delivery::deliver(
        shared.pool.clone(),
        http,
        settings,
        shared.metrics.clone(),
        stopped,
    )
    .await;
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "worker".into())
}

async fn take_jobs(shared: Shared, reader: fred::clients::Client, mut stopped: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(shared.settings.concurrency.max(1)));
    let mut stale_cursor = "0-0".to_string();
    let mut running = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stopped.changed() => break,
        };
        if *stopped.borrow() {
            break;
        }
        let next = async {
            if let Some(job) = shared
                .queue
                .claim_stale(&shared.consumer, shared.settings.lease(), &mut stale_cursor)
                .await?
            {
                tracing::info!(entry_id = %job.entry_id, "took over a job from a worker that stopped");
                return Ok(Some(job));
            }
            shared.queue.read(&reader, &shared.consumer, READ_BLOCK).await
        };
        let job = tokio::select! {
            job = next => job,
            _ = stopped.changed() => break,
        };
        match job {
            Ok(Some(job)) => {
                let shared = shared.clone();
                let stopped = stopped.clone();
                running.spawn(async move {
                    handle(&shared, job, stopped).await;
                    drop(permit);
                });
            }
            Ok(None) => tracing::debug!("no new job within the read timeout"),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "reading jobs failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    let _ = reader.quit().await;
}

/// What became of one attempt.
#[derive(Debug)]
enum AttemptError {
    /// The row left `processing` for this attempt: cancelled, or taken over.
    Lost,
    /// The worker is shutting down.
    Interrupted,
    TimedOut,
    Failed(anyhow::Error),
}

struct Attempt {
    export_id: Uuid,
    attempt: i32,
    format: ExportFormat,
    filters: UserExportFilters,
    /// What an earlier attempt may have left in storage, cleaned up before this one writes.
    left: Option<LeftUpload>,
}

async fn handle(shared: &Shared, job: Job, stopped: watch::Receiver<bool>) {
    let Some(export_id) = job.export_id else {
        tracing::warn!(entry_id = %job.entry_id, "dropping a malformed job");
        finish_entry(shared, &job.entry_id).await;
        return;
    };
    match start_attempt(shared, export_id).await {
        Ok(Started::Run(attempt)) => run(shared, &job, attempt, stopped).await,
        Ok(Started::Done) => finish_entry(shared, &job.entry_id).await,
        // Another worker holds a live lease; it acknowledges the entry when it is done.
        Ok(Started::HeldElsewhere) => {}
        Err(error) => {
            // The entry stays pending: it is taken over once idle, or the sweeper re-queues.
            tracing::warn!(%export_id, error = %format!("{error:#}"), "could not start the job");
        }
    }
}

enum Started {
    Run(Attempt),
    /// Nothing to do: finished, cancelled, gone, not due yet, or out of attempts.
    Done,
    HeldElsewhere,
}

async fn start_attempt(shared: &Shared, export_id: Uuid) -> Result<Started> {
    let client = shared.pool.get().await?;
    let (attempt, format, filters, left) =
        match exports::take(&client, export_id, shared.settings.lease()).await? {
            Taken::Attempt {
                attempt,
                format,
                filters,
                left,
            } => (attempt, format, filters, left),
            Taken::HeldElsewhere => return Ok(Started::HeldElsewhere),
            Taken::Nothing => return Ok(Started::Done),
        };
    if attempt > shared.settings.max_attempts {
        // Its earlier attempts ended without recording an outcome: workers died running it.
        let message = format!(
            "The export failed: {} attempts ended without finishing (the workers running it stopped). \
             Create a new export to try again.",
            attempt - 1
        );
        exports::fail(&client, export_id, attempt, &message).await?;
        shared.metrics.job_failed(format);
        return Ok(Started::Done);
    }
    Ok(Started::Run(Attempt {
        export_id,
        attempt,
        format,
        filters,
        left,
    }))
}

async fn run(shared: &Shared, job: &Job, attempt: Attempt, mut stopped: watch::Receiver<bool>) {
    let Attempt {
        export_id,
        attempt: number,
        format,
        ..
    } = attempt;
    let started = Instant::now();
    shared.metrics.in_flight.inc();
    tracing::info!(%export_id, attempt = number, format = format.as_str(), "export started");
    #[cfg(not(feature = "fault-injection"))]
    let progress = Arc::new(Progress::default());
    #[cfg(feature = "fault-injection")]
    let progress = Arc::new(Progress::holding_after(shared.settings.hold_after_rows));
    let (lost_tx, mut lost) = watch::channel(false);
    let keeper = tokio::spawn(keep_lease(
        shared.clone(),
        job.entry_id.clone(),
        export_id,
        number,
        progress.clone(),
        lost_tx,
    ));
    let key = Storage::object_key(export_id, number, format);
    let timeout = Duration::from_secs(shared.settings.job_timeout_secs);
    let outcome = async {
        let client = shared
            .pool
            .get()
            .await
            .context("connecting to PostgreSQL")
            .map_err(AttemptError::Failed)?;
        begin_upload(shared, &client, &attempt, &key).await?;
        let part_bytes = shared.settings.upload_part_mib.max(5) << 20;
        let opened = record_upload_id(shared, export_id, number, &key);
        let mut upload = Upload::new(shared.storage.writer(&key, part_bytes, opened));
        let written = tokio::select! {
            written = write_export(&client, &attempt.filters, format, &mut upload, &progress) => {
                written.map_err(AttemptError::Failed)
            }
            _ = lost.wait_for(|lost| *lost) => Err(AttemptError::Lost),
            _ = stopped.wait_for(|stop| *stop) => Err(AttemptError::Interrupted),
            _ = tokio::time::sleep(timeout) => Err(AttemptError::TimedOut),
        };
        let failed = match written {
            Ok(rows) => {
                // The last part and the store's completion of the upload come after the last
                // row; logged apart, since on some stores it is not constant time.
                let completing = Instant::now();
                let rows = finish_upload(&mut upload, Ok(rows))
                    .await
                    .map_err(AttemptError::Failed)?;
                return Ok((rows, upload.bytes, completing.elapsed()));
            }
            Err(error) => error,
        };
        let _ = finish_upload(&mut upload, Err(anyhow::anyhow!("{failed:?}"))).await;
        if upload.aborted {
            if let Err(error) = exports::forget_upload(&client, export_id, key.as_ref()).await {
                tracing::warn!(%export_id, error = %format!("{error:#}"), "an aborted upload stays recorded; the sweeper forgets it");
            }
        }
        Err(failed)
    }
    .await;
    keeper.abort();
    shared.metrics.in_flight.dec();

    let recorded = match outcome {
        Ok((rows, size, completing)) => {
            let file = StoredFile {
                key: &key,
                format,
                rows,
                size,
                completing,
            };
            record_done(shared, export_id, number, file, started).await
        }
        Err(AttemptError::Lost) => {
            tracing::info!(%export_id, attempt = number, "export stopped: cancelled or taken over");
            Ok(())
        }
        Err(AttemptError::Interrupted) => hand_back(shared, export_id, number).await,
        Err(AttemptError::TimedOut) => {
            let seconds = timeout.as_secs();
            let limit = match seconds % 60 {
                0 => format!("{}-minute", seconds / 60),
                _ => format!("{seconds}-second"),
            };
            let message = format!(
                "The export took longer than the {limit} limit and was stopped. Narrow the filters \
                 or try again later."
            );
            shared.metrics.job_failed(format);
            match shared.pool.get().await {
                Ok(client) => exports::fail(&client, export_id, number, &message).await,
                Err(error) => Err(error.into()),
            }
        }
        Err(AttemptError::Failed(error)) => record_failure(shared, export_id, number, format, &error).await,
    };
    match recorded {
        Ok(()) => finish_entry(shared, &job.entry_id).await,
        // The entry stays pending, so the job is taken over once its lease runs out.
        Err(error) => {
            tracing::error!(%export_id, error = %format!("{error:#}"), "could not record the outcome")
        }
    }
}

/// Cleans up what an earlier attempt left under the export's prefix (its open upload, its
/// partial or finished objects), then records that this attempt writes `key`.
async fn begin_upload(
    shared: &Shared,
    client: &deadpool_postgres::Object,
    attempt: &Attempt,
    key: &object_store::path::Path,
) -> Result<(), AttemptError> {
    if let Some(left) = &attempt.left {
        (shared
            .storage
            .clean_export(attempt.export_id, None, left.multipart())
            .await)
            .map_err(AttemptError::Failed)?;
        tracing::info!(export_id = %attempt.export_id, left = %left.key, "cleaned up after an earlier attempt");
    }
    match exports::record_upload(client, attempt.export_id, attempt.attempt, key.as_ref(), None).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(AttemptError::Lost),
        Err(error) => Err(AttemptError::Failed(error)),
    }
}

/// Records the id of the attempt's multipart upload as the store opens it, before any part
/// goes up, so that it can be aborted if this attempt dies.
fn record_upload_id(
    shared: &Shared,
    export_id: Uuid,
    attempt: i32,
    key: &object_store::path::Path,
) -> UploadOpened {
    let (pool, key) = (shared.pool.clone(), key.to_string());
    Box::new(move |upload_id| {
        let (pool, key) = (pool.clone(), key.clone());
        Box::pin(async move {
            let client = pool.get().await?;
            anyhow::ensure!(
                exports::record_upload(&client, export_id, attempt, &key, Some(&upload_id)).await?,
                "the export is no longer this attempt's"
            );
            Ok(())
        })
    })
}

/// Renews the lease and the stream entry, and records progress, every heartbeat; signals
/// `lost` when the row is no longer this attempt's (cancelled, or taken over after a stall).
async fn keep_lease(
    shared: Shared,
    entry_id: String,
    export_id: Uuid,
    attempt: i32,
    progress: Arc<Progress>,
    lost: watch::Sender<bool>,
) {
    let mut ticks = tokio::time::interval(shared.settings.heartbeat());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let renewed = async {
            let client = shared.pool.get().await?;
            exports::renew(
                &client,
                export_id,
                attempt,
                progress.rows(),
                shared.settings.lease(),
            )
            .await
        }
        .await;
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                let _ = lost.send(true);
                return;
            }
            // PostgreSQL unreachable: keep going; the lease covers a few missed beats.
            Err(error) => tracing::warn!(%export_id, error = %format!("{error:#}"), "lease not renewed"),
        }
        if let Err(error) = shared.queue.touch(&shared.consumer, &entry_id).await {
            tracing::warn!(%export_id, error = %format!("{error:#}"), "job entry not renewed");
        }
    }
}

/// A file an attempt finished uploading.
struct StoredFile<'a> {
    key: &'a object_store::path::Path,
    format: ExportFormat,
    rows: u64,
    size: u64,
    /// From the last row to the upload's completion.
    completing: Duration,
}

async fn record_done(
    shared: &Shared,
    export_id: Uuid,
    attempt: i32,
    StoredFile {
        key,
        format,
        rows,
        size,
        completing,
    }: StoredFile<'_>,
    started: Instant,
) -> Result<()> {
    let client = shared.pool.get().await?;
    let file = FinishedFile {
        key: key.as_ref(),
        rows,
        size,
        ttl: Duration::from_secs(shared.settings.file_ttl_secs),
    };
    if !exports::record_done(&client, export_id, attempt, file).await? {
        // Cancelled (or taken over) between the last row and now: this attempt's file is
        // nobody's, so it goes.
        tracing::info!(%export_id, attempt, "export finished after it was cancelled; deleting its file");
        shared.storage.delete(key.as_ref()).await?;
        return Ok(());
    }
    let took = started.elapsed();
    shared.metrics.job_succeeded(format, rows, took);
    tracing::info!(
        %export_id, attempt, format = format.as_str(), rows, bytes = size,
        seconds = took.as_secs_f64(), completing_seconds = completing.as_secs_f64(), "export done"
    );
    Ok(())
}

/// A failed attempt: retried after a backoff, or `failed` for good after the last one.
async fn record_failure(
    shared: &Shared,
    export_id: Uuid,
    attempt: i32,
    format: ExportFormat,
    error: &anyhow::Error,
) -> Result<()> {
    let client = shared.pool.get().await?;
    if attempt >= shared.settings.max_attempts {
        tracing::error!(%export_id, attempt, error = %format!("{error:#}"), "export failed for good");
        let message = format!(
            "The export failed after {attempt} attempts: {}. Create a new export to try again.",
            user_facing_cause(error)
        );
        shared.metrics.job_failed(format);
        return exports::fail(&client, export_id, attempt, &message).await;
    }
    let backoff = shared.settings.backoff(attempt);
    tracing::warn!(
        %export_id, attempt, retry_in_ms = backoff.as_millis() as u64,
        error = %format!("{error:#}"), "export attempt failed; retrying"
    );
    shared.metrics.job_retried(format);
    exports::retry_later(&client, export_id, attempt, backoff).await
}

/// What a user is told about a failure (the details are in the worker's log).
fn user_facing_cause(error: &anyhow::Error) -> &'static str {
    if error.chain().any(|cause| cause.is::<StorageFailure>()) {
        "the file storage could not be reached"
    } else if error
        .chain()
        .any(|cause| cause.is::<tokio_postgres::Error>() || cause.is::<deadpool_postgres::PoolError>())
    {
        "the database could not be read"
    } else {
        "an internal error occurred"
    }
}

/// Gives an interrupted attempt back: pending again, the attempt not counted, queued afresh.
async fn hand_back(shared: &Shared, export_id: Uuid, attempt: i32) -> Result<()> {
    let client = shared.pool.get().await?;
    if exports::hand_back(&client, export_id, attempt).await? {
        shared.queue.enqueue(export_id).await?;
        tracing::info!(%export_id, "export handed back to the queue on shutdown");
    }
    Ok(())
}

async fn finish_entry(shared: &Shared, entry_id: &str) {
    if let Err(error) = shared.queue.finish(entry_id).await {
        // Harmless: the entry is taken again later and finds nothing to do.
        tracing::warn!(entry_id, error = %format!("{error:#}"), "could not acknowledge the job");
    }
}

/// The periodic sweep, run by one worker of the deployment at a time.
async fn sweep(shared: Shared, mut stopped: watch::Receiver<bool>) {
    let interval = Duration::from_secs(shared.settings.sweep_interval_secs.max(1));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => return,
        }
        match shared.queue.try_lock("sweep", &shared.consumer, interval).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "sweeper: Redis unreachable");
                continue;
            }
        }
        if let Err(error) = requeue_lost(&shared, interval).await {
            tracing::warn!(error = %format!("{error:#}"), "sweeper: re-queueing failed");
        }
        if let Err(error) = expire_files(&shared).await {
            tracing::warn!(error = %format!("{error:#}"), "sweeper: expiring files failed");
        }
        if let Err(error) = clean_up_after_attempts(&shared).await {
            tracing::warn!(error = %format!("{error:#}"), "sweeper: cleaning up after attempts failed");
        }
        if let Err(error) = purge_idempotency_keys(&shared).await {
            tracing::warn!(error = %format!("{error:#}"), "sweeper: purging idempotency keys failed");
        }
        if let Err(error) = purge_webhook_deliveries(&shared).await {
            tracing::warn!(error = %format!("{error:#}"), "sweeper: purging webhook deliveries failed");
        }
        let waiting = async { anyhow::Ok(webhooks::count_waiting(&*shared.pool.get().await?).await?) };
        match waiting.await {
            Ok(waiting) => shared.metrics.webhooks_waiting.set(waiting),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "sweeper: counting webhook events failed")
            }
        }
    }
}

/// Queues every due export that has no entry on the stream: its entry was lost with Redis's
/// memory, or it is a retry whose backoff has passed. `grace` keeps the sweeper off exports
/// the API is queueing this instant.
async fn requeue_lost(shared: &Shared, grace: Duration) -> Result<usize> {
    let (pool, queue) = (&shared.pool, &shared.queue);
    let client = pool.get().await?;
    let due = exports::due(&client, grace).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let queued = queue.queued_exports().await?;
    let lost: Vec<Uuid> = due.into_iter().filter(|id| !queued.contains(id)).collect();
    for export_id in &lost {
        queue.enqueue(*export_id).await?;
    }
    if !lost.is_empty() {
        exports::mark_queued(&client, &lost).await?;
        tracing::info!(count = lost.len(), "sweeper: queued exports that had no job");
    }
    Ok(lost.len())
}

async fn purge_idempotency_keys(shared: &Shared) -> Result<()> {
    let client = shared.pool.get().await?;
    let purged = exports::purge_idempotency_keys(&client, crate::idempotency::KEPT).await?;
    if purged > 0 {
        tracing::info!(purged, "sweeper: forgot idempotency keys older than a day");
    }
    Ok(())
}

/// Rows the sweeper expires or purges per statement: a backlog goes in batches, each short,
/// until none is left.
const SWEEP_BATCH: i64 = 100;

/// Deletes the webhook deliveries that ended (delivered or given up) longer ago than the
/// retention: each holds a snapshot of its export, personal data kept only as long as promised.
async fn purge_webhook_deliveries(shared: &Shared) -> Result<u64> {
    let client = shared.pool.get().await?;
    let retention = Duration::from_secs(
        shared
            .settings
            .webhook_delivery_retention_days
            .saturating_mul(24 * 3600),
    );
    let mut purged = 0;
    loop {
        let batch = webhooks::purge_ended_deliveries(&client, retention, SWEEP_BATCH).await?;
        purged += batch;
        if batch < SWEEP_BATCH as u64 {
            break;
        }
    }
    if purged > 0 {
        tracing::info!(purged, "sweeper: deleted webhook deliveries past their retention");
    }
    Ok(purged)
}

/// Removes what attempts left in storage for exports that reached a final status while it was
/// there: an attempt killed mid-upload before the export was cancelled or failed, one whose
/// abort failed, one that lost its export and was killed before it cleaned up.
async fn clean_up_after_attempts(shared: &Shared) -> Result<usize> {
    let client = shared.pool.get().await?;
    let mut count = 0;
    loop {
        let left = exports::uploads_left(&client, shared.settings.lease(), SWEEP_BATCH).await?;
        for (export_id, keep, left) in &left {
            shared
                .storage
                .clean_export(*export_id, keep.as_deref(), left.multipart())
                .await?;
            exports::forget_upload(&client, *export_id, &left.key).await?;
            tracing::info!(%export_id, left = %left.key, "sweeper: cleaned up after an attempt");
        }
        count += left.len();
        if left.len() < SWEEP_BATCH as usize {
            return Ok(count);
        }
    }
}

/// Deletes the files of every export past `expires_at`, in batches, and marks them `expired`.
async fn expire_files(shared: &Shared) -> Result<usize> {
    let client = shared.pool.get().await?;
    let mut count = 0;
    loop {
        let expired = exports::past_expiry(&client, SWEEP_BATCH).await?;
        for export_id in &expired {
            shared.storage.clean_export(*export_id, None, None).await?;
            exports::expire(&client, *export_id).await?;
            tracing::info!(%export_id, "export expired; file deleted");
        }
        count += expired.len();
        if expired.len() < SWEEP_BATCH as usize {
            return Ok(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_explained_without_internals() {
        let storage = crate::storage::storage_failure(
            "uploading the file",
            object_store::Error::NotImplemented {
                operation: "put".into(),
                implementer: "test".into(),
            },
        );
        assert_eq!(
            user_facing_cause(&storage),
            "the file storage could not be reached"
        );
        assert_eq!(
            user_facing_cause(&anyhow::anyhow!("boom")),
            "an internal error occurred"
        );
    }
}
