//! A running job's lease: renewed, with the job's stream entry and its progress, every
//! heartbeat, until the attempt ends or the row is no longer its own.

use std::sync::Arc;

use tokio::sync::watch;
use uuid::Uuid;

use super::Shared;
use crate::db::exports;
use crate::export_file::Progress;
use crate::queue::Job;

/// Renews the lease and the stream entry, and records progress, every heartbeat; signals
/// `lost` when the row is no longer this attempt's (cancelled, or taken over after a stall).
pub(super) async fn keep_lease(
    shared: Shared,
    job: Job,
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
            let lease = shared.settings.lease();
            anyhow::Ok(exports::renew(&client, export_id, attempt, progress.rows(), lease).await?)
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
        if let Err(error) = shared.queue.touch(&shared.consumer, &job).await {
            tracing::warn!(%export_id, error = %format!("{error:#}"), "job entry not renewed");
        }
    }
}
