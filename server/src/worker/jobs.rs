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
use crate::db::exports::{self, Checkpoint, FinishedFile, LeftUpload, Taken};
use crate::export_file::{finish_upload, write_export, Progress, RecordCheckpoint, Upload};
use crate::model::{ExportCompression, ExportFile, ExportFormat, UserExportFilters};
use crate::queue::Job;
use crate::storage::{PartsDone, ResumedUploadFailed, StorageFailure, UploadOpened};
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
    let timeout = Duration::from_secs(shared.settings.job_timeout_secs);
    let attempted = async {
        let client = shared
            .pool
            .get()
            .await
            .context("connecting to PostgreSQL")
            .map_err(AttemptError::Failed)?;
        if attempt.trace.first_attempt.is_none() {
            if let Some(traceparent) = telemetry::traceparent(&trace) {
                exports::record_first_attempt(&client, export_id, number, &traceparent)
                    .await
                    .map_err(|error| AttemptError::Failed(error.into()))?;
            }
        }
        let mut resume = resume_point(shared, &attempt);
        let mut after_failed_resume = false;
        // One limit for the attempt, whether or not it starts its file over.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let resumed = resume.is_some();
            let written = write_file(
                shared,
                &client,
                &attempt,
                resume.take(),
                after_failed_resume,
                &progress,
                async {
                    tokio::select! {
                        _ = lost.wait_for(|lost| *lost) => AttemptError::Lost,
                        _ = interrupted.wait_for(|interrupt| *interrupt) => AttemptError::Interrupted,
                        _ = tokio::time::sleep_until(deadline) => AttemptError::TimedOut,
                    }
                },
            )
            .await;
            match written {
                Err(AttemptError::Failed(error)) if resumed && starts_over(shared, &error).await => {
                    tracing::warn!(
                        %export_id, attempt = number, error = %format!("{error:#}"),
                        "the upload of the last checkpoint cannot be used; starting the file over"
                    );
                    after_failed_resume = true;
                }
                written => return written,
            }
        }
    };
    let outcome = telemetry::within(&trace, attempted).await;
    keeper.abort();
    shared.metrics.in_flight.dec();
    let (error, attributes) = match &outcome {
        Ok(FileWritten { rows, size, .. }) => (
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
        Ok(written) => record_done(shared, export_id, number, format, written, started).await,
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

/// A file an attempt finished uploading.
struct FileWritten {
    key: object_store::path::Path,
    /// Rows in the file, and those this attempt read (fewer when it went on from a checkpoint).
    rows: u64,
    rows_read: u64,
    size: u64,
    /// From the last row to the upload's completion.
    completing: Duration,
}

/// Where the attempt goes on from: the checkpoint an earlier attempt recorded, when its file
/// keeps checkpoints (`keeps_checkpoints`) and the upload it names is still recorded.
fn resume_point(shared: &Shared, attempt: &Attempt) -> Option<(LeftUpload, Checkpoint)> {
    let left = attempt.left.as_ref()?;
    let checkpoint = *left.checkpoint.clone()?;
    (keeps_checkpoints(shared, &attempt.file) && left.upload_id.is_some()).then(|| (left.clone(), checkpoint))
}

/// Whether a file's completed parts are checkpoints that the next attempt goes on from: on
/// S3 (a file in a local directory is written again from the start), for CSV and JSON Lines
/// uncompressed. XLSX is a zip whose writer cannot be restarted mid-file, and a gzip stream
/// carries its compressor's state across parts; both are written again from the start
/// (docs/architecture.md#the-worker says what that costs).
fn keeps_checkpoints(shared: &Shared, file: &ExportFile) -> bool {
    shared.storage.keeps_parts()
        && file.format != ExportFormat::Xlsx
        && file.compression == ExportCompression::None
}

/// Whether an attempt whose resumed upload failed starts its file over: when the store
/// otherwise answers, the upload itself is gone or spoiled; when it does not, the attempt
/// fails as any other would, and its retry goes on from the checkpoint still.
async fn starts_over(shared: &Shared, error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<ResumedUploadFailed>()) && shared.storage.check().await.is_ok()
}

/// Writes the attempt's file: after `resume` when given, from the start otherwise, until the
/// file is complete or `stopped` says why not. On the way out, the upload is completed,
/// aborted, or left open for the next attempt to go on with.
async fn write_file(
    shared: &Shared,
    client: &deadpool_postgres::Object,
    attempt: &Attempt,
    resume: Option<(LeftUpload, Checkpoint)>,
    after_failed_resume: bool,
    progress: &Arc<Progress>,
    stopped: impl std::future::Future<Output = AttemptError>,
) -> Result<FileWritten, AttemptError> {
    let export_id = attempt.export_id;
    let part_bytes = shared.settings.upload_part_mib.max(5) << 20;
    let checkpoints = keeps_checkpoints(shared, &attempt.file);
    let (key, writer, from) = match resume {
        Some((left, from)) => {
            let key = object_store::path::Path::from(left.key.as_str());
            let done = PartsDone {
                upload_id: left.upload_id.clone().expect("resumed only with an upload id"),
                parts: from.parts.clone(),
                bytes: from.bytes,
            };
            let writer = (shared.storage.resume_writer(&key, part_bytes, done))
                .expect("checkpoints are kept only on S3");
            tracing::info!(
                %export_id, attempt = attempt.attempt, parts = from.parts.len(), rows = from.rows,
                bytes = from.bytes, "export resumed from its last checkpoint"
            );
            progress.resume_at(from.rows);
            (key, writer, Some(from))
        }
        None => {
            let key = crate::storage::Storage::object_key(export_id, attempt.attempt, &attempt.file);
            begin_upload(shared, client, attempt, &key, after_failed_resume).await?;
            let opened = record_upload_id(shared, export_id, attempt.attempt, &key);
            let writer = shared.storage.writer(&key, part_bytes, opened);
            (key, writer, None)
        }
    };
    let mut upload = match checkpoints {
        true => {
            let record = record_checkpoints(shared, export_id, attempt.attempt);
            Upload::with_checkpoints(writer, record, from.as_ref())
        }
        false => Upload::new(writer),
    };
    let writing = telemetry::step("export.file");
    let written = tokio::select! {
        written = write_export(client, &attempt.filters, &attempt.file, &mut upload, progress, from.as_ref()) => {
            written.map_err(attempt_error)
        }
        stopped = stopped => Err(stopped),
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
            return Ok(FileWritten {
                key,
                rows,
                rows_read: rows - from.map_or(0, |from| from.rows),
                size: upload.bytes,
                completing: completing.elapsed(),
            });
        }
        Err(error) => error,
    };
    let upload_id = upload.upload_id();
    // An export that goes on later goes on from this upload: a worker stopping first sends
    // what it has in flight; one that lost the export leaves the upload to the attempt that
    // took it over (a cancelled export's goes now).
    let goes_on = checkpoints
        && match &failed {
            AttemptError::Interrupted => {
                if let Err(error) = upload.settle().await {
                    tracing::warn!(%export_id, error = %format!("{error:#}"), "parts in flight not recorded");
                }
                true
            }
            AttemptError::Failed(_) => attempt.attempt < shared.settings.max_attempts,
            AttemptError::Lost => match &upload_id {
                Some(upload_id) => exports::upload_wanted(client, export_id, upload_id)
                    .await
                    .unwrap_or(true),
                None => false,
            },
            AttemptError::TimedOut => false,
        };
    if goes_on {
        upload.leave_open().await;
        return Err(failed);
    }
    let _ = finish_upload(&mut upload, Err(anyhow::anyhow!("{failed:?}"))).await;
    if upload.aborted {
        let aborted = LeftUpload {
            key: key.to_string(),
            upload_id,
            checkpoint: None,
        };
        if let Err(error) = exports::forget_upload(client, export_id, &aborted).await {
            tracing::warn!(%export_id, error = %format!("{error:#}"), "an aborted upload stays recorded; the sweeper forgets it");
        }
    }
    Err(failed)
}

/// A failure of the file's writing; one that only says the export is no longer this
/// attempt's means it was lost.
fn attempt_error(error: anyhow::Error) -> AttemptError {
    match error.chain().any(|cause| cause.is::<NotThisAttempts>()) {
        true => AttemptError::Lost,
        false => AttemptError::Failed(error),
    }
}

/// A conditional write of the attempt found the export no longer its own.
#[derive(Debug, thiserror::Error)]
#[error("the export is no longer this attempt's")]
struct NotThisAttempts;

/// Cleans up what an earlier attempt left under the export's prefix (its open upload, its
/// partial or finished objects), then records that this attempt writes `key`. After a failed
/// resume the upload is gone or spoiled, and aborting it is only a courtesy (s3s-fs refuses
/// to abort an upload it no longer has, where S3 says it is not found).
async fn begin_upload(
    shared: &Shared,
    client: &deadpool_postgres::Object,
    attempt: &Attempt,
    key: &object_store::path::Path,
    after_failed_resume: bool,
) -> Result<(), AttemptError> {
    if let Some(left) = &attempt.left {
        let mut upload = left.multipart();
        if let Some((key, id)) = upload.filter(|_| after_failed_resume) {
            if let Err(error) = shared.storage.abort_upload(key, id).await {
                tracing::info!(export_id = %attempt.export_id, error = %format!("{error:#}"), "the resumed upload was not aborted");
            }
            upload = None;
        }
        (shared.storage.clean_export(attempt.export_id, None, upload).await).map_err(AttemptError::Failed)?;
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
            match exports::record_upload(&client, export_id, attempt, &key, Some(&upload_id)).await? {
                true => Ok(()),
                false => Err(NotThisAttempts.into()),
            }
        })
    })
}

/// Records each checkpoint of the attempt's upload in the export's row, conditional on the
/// attempt and the upload, as its parts are completed.
fn record_checkpoints(shared: &Shared, export_id: Uuid, attempt: i32) -> RecordCheckpoint {
    let pool = shared.pool.clone();
    #[cfg(feature = "fault-injection")]
    let hold = Arc::new(crate::export_file::Hold::new(
        shared.settings.hold_after_parts,
        shared.settings.release_hold.clone(),
    ));
    Box::new(move |upload_id, checkpoint| {
        let pool = pool.clone();
        #[cfg(feature = "fault-injection")]
        let hold = hold.clone();
        Box::pin(async move {
            let client = pool.get().await?;
            if !exports::record_checkpoint(&client, export_id, attempt, &upload_id, &checkpoint).await? {
                return Err(NotThisAttempts.into());
            }
            #[cfg(feature = "fault-injection")]
            hold.reached("parts", checkpoint.parts.len() as u64).await;
            Ok(())
        })
    })
}

async fn record_done(
    shared: &Shared,
    export_id: Uuid,
    attempt: i32,
    format: ExportFormat,
    written: FileWritten,
    started: Instant,
) -> Result<()> {
    let client = shared.pool.get().await?;
    let FileWritten {
        key,
        rows,
        rows_read,
        size,
        completing,
    } = written;
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
        %export_id, attempt, format = format.as_str(), rows, rows_read, bytes = size,
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
