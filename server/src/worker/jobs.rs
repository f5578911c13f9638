//! The job loop: takes jobs off the stream (or over from a worker that stopped), runs each
//! attempt (the query, the file, the upload) and records its outcome.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fred::prelude::ClientLike;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::lease::keep_lease;
use super::{Shared, READ_BLOCK};
use crate::db::exports::{self, FinishedFile, LeftUpload, Taken};
use crate::export_file::{finish_upload, write_export, Progress, Upload};
use crate::model::{ExportFile, ExportFormat, UserExportFilters};
use crate::queue::Job;
use crate::storage::{StorageFailure, UploadOpened};
use crate::telemetry::{self, TraceOrigin};
use opentelemetry::KeyValue;

/// Takes jobs until `stopped`, then waits for the running ones, which stop early only when
/// `interrupted`.
pub(super) async fn take_jobs(
    shared: Shared,
    reader: fred::clients::Client,
    mut stopped: watch::Receiver<bool>,
    interrupted: watch::Receiver<bool>,
) {
    if !store_answers(&shared, &mut stopped).await {
        let _ = reader.quit().await;
        return;
    }
    let slots = Arc::new(Semaphore::new(shared.settings.concurrency.max(1)));
    let mut stale_scan = crate::queue::StaleScan::default();
    let mut running = JoinSet::new();
    // Said once when reading starts failing (Redis down) and once when it works again.
    let mut failing = false;
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
                .claim_stale(&shared.consumer, shared.settings.lease(), &mut stale_scan)
                .await?
            {
                tracing::info!(entry_id = %job.entry_id, "took over a job from a worker that stopped");
                return Ok(Some(job));
            }
            if shared.settings.fifo {
                return shared
                    .queue
                    .read_fifo(&reader, &shared.consumer, READ_BLOCK)
                    .await;
            }
            shared.queue.read(&reader, &shared.consumer, READ_BLOCK).await
        };
        let job = tokio::select! {
            job = next => job,
            _ = stopped.changed() => break,
        };
        if job.is_ok() && failing {
            failing = false;
            tracing::info!("reading jobs again");
        }
        match job {
            Ok(Some(job)) => {
                let shared = shared.clone();
                let interrupted = interrupted.clone();
                running.spawn(async move {
                    handle(&shared, job, interrupted).await;
                    drop(permit);
                });
            }
            Ok(None) => tracing::debug!("no new job within the read timeout"),
            Err(error) => {
                if !failing {
                    tracing::warn!(error = %format!("{error:#}"), "reading jobs failed; retrying every second");
                }
                failing = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    let _ = reader.quit().await;
}

/// Waits until the file store answers, as it may not when a deployment starts (a bucket not
/// made yet, credentials not in place): no job is taken before, so none uses up its attempts
/// on it. An outage later is retried within each export's attempts. False if told to stop.
async fn store_answers(shared: &Shared, stopped: &mut watch::Receiver<bool>) -> bool {
    let mut said = false;
    loop {
        let checked = tokio::select! {
            checked = shared.storage.check() => checked,
            _ = stopped.changed() => return false,
        };
        match checked {
            Ok(()) if said => {
                tracing::info!("the file store answers: taking jobs");
                return true;
            }
            Ok(()) => return true,
            Err(error) if !said => {
                said = true;
                tracing::warn!(error = %format!("{error:#}"), "taking no jobs until the file store answers");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(STORE_CHECK_INTERVAL) => {}
            _ = stopped.changed() => return false,
        }
    }
}

/// How often a worker that has not yet reached the file store asks it again.
const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
    file: ExportFile,
    filters: UserExportFilters,
    /// What an earlier attempt may have left in storage, cleaned up before this one writes.
    left: Option<LeftUpload>,
    /// The trace this attempt joins.
    trace: TraceOrigin,
}

async fn handle(shared: &Shared, job: Job, interrupted: watch::Receiver<bool>) {
    let Some(export_id) = job.export_id else {
        tracing::warn!(entry_id = %job.entry_id, "dropping a malformed job");
        acknowledge(shared, &job).await;
        return;
    };
    match start_attempt(shared, export_id).await {
        Ok(Started::Run(attempt)) => {
            shared.deferred_in_a_row.store(0, Ordering::Relaxed);
            run(shared, &job, attempt, interrupted).await
        }
        Ok(Started::Done) => acknowledge(shared, &job).await,
        // Another worker holds a live lease; it acknowledges the entry when it is done.
        Ok(Started::HeldElsewhere) => {}
        Ok(Started::Deferred) => {
            tracing::debug!(%export_id, "deferred: its owner has an export running while another user waits");
            if let Err(error) = shared.queue.put_back(&job).await {
                tracing::warn!(%export_id, error = %format!("{error:#}"), "could not put a deferred job back");
            }
            // When every job read is deferred (the waiting user's job is missing from the
            // queue until the sweeper queues it), the slot rests a moment rather than going
            // round; a deferral between takes, the usual kind, costs no pause.
            if shared.deferred_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= DEFERRALS_BEFORE_PAUSE {
                tokio::time::sleep(DEFER_PAUSE).await;
            }
        }
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
    Deferred,
}

/// Jobs deferred in a row, with none taken, before a slot rests `DEFER_PAUSE` after each.
/// A 100 ms rest after every deferral made a backlog of 50 users' exports 17% slower than
/// first in, first out (`cargo xtask bench fairness`).
const DEFERRALS_BEFORE_PAUSE: u32 = 8;
const DEFER_PAUSE: Duration = Duration::from_millis(100);

async fn start_attempt(shared: &Shared, export_id: Uuid) -> Result<Started> {
    let mut client = shared.pool.get().await?;
    let (attempt, file, filters, left, trace) = match exports::take(
        &mut client,
        export_id,
        shared.settings.lease(),
        !shared.settings.fifo,
    )
    .await?
    {
        Taken::Attempt {
            attempt,
            file,
            filters,
            left,
            trace,
        } => (attempt, file, filters, left, trace),
        Taken::HeldElsewhere => return Ok(Started::HeldElsewhere),
        Taken::Deferred => return Ok(Started::Deferred),
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
        shared.metrics.job_failed(file.format);
        return Ok(Started::Done);
    }
    Ok(Started::Run(Attempt {
        export_id,
        attempt,
        file,
        filters,
        left,
        trace,
    }))
}

async fn run(shared: &Shared, job: &Job, attempt: Attempt, mut interrupted: watch::Receiver<bool>) {
    let Attempt {
        export_id,
        attempt: number,
        ref file,
        ..
    } = attempt;
    let format = file.format;
    let started = Instant::now();
    shared.metrics.in_flight.inc();
    tracing::info!(%export_id, attempt = number, format = format.as_str(), "export started");
    let trace = telemetry::attempt(&attempt.trace, export_id, number, format.as_str());
    #[cfg(not(feature = "fault-injection"))]
    let progress = Arc::new(Progress::default());
    #[cfg(feature = "fault-injection")]
    let progress = Arc::new(Progress::holding_after(
        shared.settings.hold_after_rows,
        shared.settings.release_hold.clone(),
    ));
    let (lost_tx, mut lost) = watch::channel(false);
    let keeper = tokio::spawn(keep_lease(
        shared.clone(),
        job.clone(),
        export_id,
        number,
        progress.clone(),
        lost_tx,
    ));
    let key = crate::storage::Storage::object_key(export_id, number, file);
    let timeout = Duration::from_secs(shared.settings.job_timeout_secs);
    let attempted = async {
        let client = shared
            .pool
            .get()
            .await
            .context("connecting to PostgreSQL")
            .map_err(AttemptError::Failed)?;
        begin_upload(shared, &client, &attempt, &key).await?;
        if attempt.trace.first_attempt.is_none() {
            if let Some(traceparent) = telemetry::traceparent(&trace) {
                exports::record_first_attempt(&client, export_id, number, &traceparent)
                    .await
                    .map_err(|error| AttemptError::Failed(error.into()))?;
            }
        }
        let part_bytes = shared.settings.upload_part_mib.max(5) << 20;
        let opened = record_upload_id(shared, export_id, number, &key);
        let mut upload = Upload::new(shared.storage.writer(&key, part_bytes, opened));
        let writing = telemetry::step("export.file");
        let written = tokio::select! {
            written = write_export(&client, &attempt.filters, file, &mut upload, &progress) => {
                written.map_err(AttemptError::Failed)
            }
            _ = lost.wait_for(|lost| *lost) => Err(AttemptError::Lost),
            _ = interrupted.wait_for(|interrupt| *interrupt) => Err(AttemptError::Interrupted),
            _ = tokio::time::sleep(timeout) => Err(AttemptError::TimedOut),
        };
        telemetry::end_step(writing, &written.as_ref().map_err(|error| format!("{error:?}")));
        let failed = match written {
            Ok(rows) => {
                // The last part and the store's completion of the upload come after the last
                // row; logged apart, since on some stores it is not constant time.
                let completing = Instant::now();
                let step = telemetry::step("export.upload");
                let rows = finish_upload(&mut upload, Ok(rows)).await;
                telemetry::end_step(step, &rows);
                let rows = rows.map_err(AttemptError::Failed)?;
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
    };
    let outcome = telemetry::within(&trace, attempted).await;
    keeper.abort();
    shared.metrics.in_flight.dec();
    let (error, attributes) = match &outcome {
        Ok((rows, size, _)) => (
            None,
            vec![
                KeyValue::new(telemetry::ROWS, *rows as i64),
                KeyValue::new(telemetry::BYTES, *size as i64),
            ],
        ),
        Err(error) => (Some(format!("{error:?}")), Vec::new()),
    };
    telemetry::end_attempt(&trace, error, attributes);

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
            async {
                let client = shared.pool.get().await?;
                anyhow::Ok(exports::fail(&client, export_id, number, &message).await?)
            }
            .await
        }
        Err(AttemptError::Failed(error)) => record_failure(shared, export_id, number, format, &error).await,
    };
    match recorded {
        Ok(()) => acknowledge(shared, job).await,
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
        Err(error) => Err(AttemptError::Failed(error.into())),
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
        return Ok(exports::fail(&client, export_id, attempt, &message).await?);
    }
    let backoff = shared.settings.backoff(attempt);
    tracing::warn!(
        %export_id, attempt, retry_in_ms = backoff.as_millis() as u64,
        error = %format!("{error:#}"), "export attempt failed; retrying"
    );
    shared.metrics.job_retried(format);
    Ok(exports::retry_later(&client, export_id, attempt, backoff).await?)
}

/// What a user is told about a failure (the details are in the worker's log).
fn user_facing_cause(error: &anyhow::Error) -> &'static str {
    if error.chain().any(|cause| cause.is::<StorageFailure>()) {
        "the file storage could not be reached"
    } else if error.chain().any(|cause| {
        cause.is::<crate::db::Error>()
            || cause.is::<tokio_postgres::Error>()
            || cause.is::<deadpool_postgres::PoolError>()
    }) {
        "the database could not be read"
    } else {
        "an internal error occurred"
    }
}

/// Gives an interrupted attempt back: pending again, the attempt not counted, queued afresh.
async fn hand_back(shared: &Shared, export_id: Uuid, attempt: i32) -> Result<()> {
    let client = shared.pool.get().await?;
    if let Some(rows) = exports::hand_back(&client, export_id, attempt).await? {
        shared.queue.enqueue(export_id, rows).await?;
        tracing::info!(%export_id, "export handed back to the queue on shutdown");
    }
    Ok(())
}

async fn acknowledge(shared: &Shared, job: &Job) {
    if let Err(error) = shared.queue.acknowledge(job).await {
        // Harmless: the entry is taken again later and finds nothing to do.
        tracing::warn!(entry_id = %job.entry_id, error = %format!("{error:#}"), "could not acknowledge the job");
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
