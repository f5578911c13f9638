//! The sweeper, run by one worker of the deployment at a time (a Redis lock): re-queues lost
//! and due exports, expires files, cleans up after attempts, and purges idempotency keys and
//! old webhook deliveries, each in batches of `SWEEP_BATCH`.

use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;
use uuid::Uuid;

use super::Shared;
use crate::db::{exports, webhooks};

/// The periodic sweep, run by one worker of the deployment at a time.
pub(super) async fn sweep(shared: Shared, mut stopped: watch::Receiver<bool>) {
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
    let lost: Vec<(Uuid, u64)> = due.into_iter().filter(|(id, _)| !queued.contains(id)).collect();
    for (export_id, rows) in &lost {
        queue.enqueue(*export_id, *rows).await?;
    }
    let lost: Vec<Uuid> = lost.into_iter().map(|(id, _)| id).collect();
    if !lost.is_empty() {
        exports::mark_queued(&client, &lost).await?;
        tracing::info!(count = lost.len(), "sweeper: queued exports that had no job");
    }
    Ok(lost.len())
}

async fn purge_idempotency_keys(shared: &Shared) -> Result<()> {
    let client = shared.pool.get().await?;
    let purged = exports::purge_idempotency_keys(&client, exports::IDEMPOTENCY_KEYS_KEPT).await?;
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
            exports::forget_upload(&client, *export_id, left).await?;
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
