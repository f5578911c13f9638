//! Delivering the webhook outbox (`webhook_deliveries`), in the workers: each due event is
//! claimed for one attempt at a time (its row leased by a short statement: `LEASE`), its body
//! rendered from the export as its status change left it, and sent as `exports_spec::webhooks`
//! says (signed as Standard Webhooks 1.0 says, 10 seconds, no redirects, a 2xx ends it; tried
//! again with exponential backoff and equal jitter until a day has passed since the event).
//! The endpoint's URL is checked again at each attempt, and the client's resolver connects
//! only to the public addresses a name resolves to, so a name that starts resolving to a
//! private address after registration is refused at connection.
//!
//! One endpoint cannot hold up another's deliveries: each attempt is a task of its
//! own, at most `concurrency` per process (the slots), and a claim skips every endpoint that
//! already has `per_endpoint` attempts in flight, so a slow or failing endpoint holds only
//! its own slots and no attempt waits on another's answer. No transaction is open during an
//! attempt: outcomes are recorded by one task, in short batches, each only if the row's lease
//! is still the attempt's own.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use exports_spec::webhook_url::UrlPolicy;
use exports_spec::webhooks::{self, Attempt, Event, Retries, ATTEMPT_TIMEOUT};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::Shared;
use crate::db::exports::ExportRow;
use crate::db::webhooks::{self as outbox, DueDelivery};
use crate::metrics::Metrics;
use crate::throughput::Rates;

/// How deliveries are made and retried.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub policy: UrlPolicy,
    pub retries: Retries,
    /// Attempts in flight in one worker process.
    pub concurrency: usize,
    /// Attempts in flight for one endpoint, across the workers.
    pub per_endpoint: usize,
    /// How often an idle worker looks for due events.
    pub poll: Duration,
}

/// How long a claimed event is its worker's: the attempt's time limit, and time to record it.
/// A worker that dies mid-attempt leaves the event due again when this runs out.
pub const LEASE: Duration = Duration::from_secs(ATTEMPT_TIMEOUT.as_secs() + 5);

/// Outcomes recorded in one transaction, at most.
const RECORD_BATCH: usize = 256;

/// The HTTP client of deliveries (`exports_spec::webhooks::client`).
pub fn client(policy: &UrlPolicy) -> anyhow::Result<reqwest::Client> {
    webhooks::client(policy, concat!("exports-webhooks/", env!("CARGO_PKG_VERSION")))
}

/// One attempt's outcome on its way to be recorded, with the slot it holds until then.
struct Outcome {
    delivery: DueDelivery,
    attempted_at: DateTime<Utc>,
    attempt: Attempt,
    _slot: OwnedSemaphorePermit,
}

/// Delivers due events until `stopped`: claims as many as there are free slots (never more
/// than `per_endpoint` in flight per endpoint), makes each attempt as a task of its own, and
/// claims again as soon as an outcome is recorded, or every `poll` when nothing was due.
/// Attempts in flight when it stops are finished (each within `ATTEMPT_TIMEOUT`) and recorded.
pub async fn deliver(
    pool: deadpool_postgres::Pool,
    http: reqwest::Client,
    settings: DeliverySettings,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let freed = Arc::new(Notify::new());
    let (outcomes, recorded) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(record(
        pool.clone(),
        settings.retries,
        metrics,
        recorded,
        freed.clone(),
    ));
    let mut attempts = JoinSet::new();
    while !*stopped.borrow() {
        while attempts.try_join_next().is_some() {}
        let free = slots.available_permits();
        let claimed = if free == 0 {
            Vec::new()
        } else {
            let claim = async {
                let mut client = pool.get().await?;
                anyhow::Ok(
                    outbox::claim_due(&mut client, free as i64, settings.per_endpoint as i64, LEASE).await?,
                )
            };
            claim.await.unwrap_or_else(|error| {
                tracing::warn!(error = %format!("{error:#}"), "webhooks: claiming due events failed");
                Vec::new()
            })
        };
        if claimed.is_empty() {
            // Nothing due, or no free slot: look again when an outcome frees one, or later.
            tokio::select! {
                _ = tokio::time::sleep(settings.poll) => {}
                _ = freed.notified() => {}
                _ = stopped.changed() => {}
            }
            continue;
        }
        for delivery in claimed {
            let slot = slots
                .clone()
                .try_acquire_owned()
                .expect("no more claimed than there are free slots");
            let (http, policy, outcomes) = (http.clone(), settings.policy.clone(), outcomes.clone());
            attempts.spawn(async move {
                let attempted_at = Utc::now();
                let attempt = if delivery.endpoint_deleted {
                    Attempt::Failed {
                        status: None,
                        error: "the endpoint was deleted".to_string(),
                    }
                } else {
                    send(&http, &policy, &delivery).await
                };
                let _ = outcomes.send(Outcome {
                    delivery,
                    attempted_at,
                    attempt,
                    _slot: slot,
                });
            });
        }
    }
    while attempts.join_next().await.is_some() {}
    drop(outcomes);
    let _ = recorder.await;
}

/// Records outcomes as they come, in batches of what has arrived; then frees their slots and
/// wakes the claimer. An outcome whose lease has passed to another worker is not recorded
/// (that worker's attempt will be); one that cannot be recorded at all (the database gone)
/// leaves its event due again when the lease ends: delivered at least once.
async fn record(
    pool: deadpool_postgres::Pool,
    retries: Retries,
    metrics: Arc<Metrics>,
    mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    freed: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while outcomes.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        if let Err(error) = record_batch(&pool, &retries, &metrics, &batch).await {
            tracing::warn!(error = %format!("{error:#}"), "webhooks: recording attempts failed; their events are due again when their leases end");
        }
        batch.clear();
        freed.notify_one();
    }
}

/// One transaction: the delivered ones in one statement, each failure on its own (tried
/// again later, or given up after `retry_for`).
async fn record_batch(
    pool: &deadpool_postgres::Pool,
    retries: &Retries,
    metrics: &Metrics,
    batch: &[Outcome],
) -> anyhow::Result<()> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let delivered: Vec<outbox::Delivered> = batch
        .iter()
        .filter_map(|outcome| match outcome.attempt {
            Attempt::Delivered(status) => Some(outbox::Delivered {
                id: outcome.delivery.id,
                status,
                lease: outcome.delivery.lease,
                attempted_at: outcome.attempted_at,
            }),
            Attempt::Failed { .. } => None,
        })
        .collect();
    let delays = if delivered.is_empty() {
        Vec::new()
    } else {
        outbox::record_delivered(&*transaction, &delivered).await?
    };
    let (mut failed, mut given_up) = (0, 0);
    for outcome in batch {
        let Attempt::Failed { status, error } = &outcome.attempt else {
            continue;
        };
        let delivery = &outcome.delivery;
        let age = (Utc::now() - delivery.occurred_at).to_std().unwrap_or_default();
        let retry_in = (!delivery.endpoint_deleted)
            .then(|| retries.after(delivery.attempt.max(1) as u32, age))
            .flatten();
        let recorded = outbox::record_failure(
            &*transaction,
            (delivery.id, delivery.lease),
            outcome.attempted_at,
            *status,
            error,
            retry_in,
        )
        .await?;
        if !recorded {
            continue;
        }
        failed += 1;
        match retry_in {
            Some(retry_in) => {
                tracing::info!(delivery_id = %delivery.id, endpoint_id = %delivery.endpoint_id, attempt = delivery.attempt, %error, retry_in_ms = retry_in.as_millis() as u64, "webhook: attempt failed")
            }
            None => {
                given_up += 1;
                tracing::warn!(delivery_id = %delivery.id, endpoint_id = %delivery.endpoint_id, attempts = delivery.attempt, %error, "webhook: gave up");
            }
        }
    }
    transaction.commit().await?;
    // Counted once committed: what the metrics say happened did.
    for delay in delays {
        metrics.webhook_delivered(delay);
    }
    for _ in 0..failed {
        metrics.webhook_attempt_failed();
    }
    for _ in 0..given_up {
        metrics.webhook_given_up();
    }
    Ok(())
}

async fn send(http: &reqwest::Client, policy: &UrlPolicy, delivery: &DueDelivery) -> Attempt {
    let export = match ExportRow::from_snapshot(&delivery.export) {
        Ok(row) => crate::views::export(&row, &Rates::default()),
        Err(error) => {
            return Attempt::Failed {
                status: None,
                error: format!("the event could not be rendered: {error:#}"),
            }
        }
    };
    let export = serde_json::to_value(export).expect("an export serialises");
    let body = webhooks::event_body(&delivery.event_type, delivery.occurred_at, &export);
    let id = delivery.id.to_string();
    webhooks::attempt(
        http,
        policy,
        &delivery.url,
        &delivery.secret,
        &Event { id: &id, body: &body },
    )
    .await
}

/// Delivers due webhook events until stopped (`webhook_delivery::deliver`): up to
/// `webhook_concurrency` attempts at once, at most `webhook_endpoint_concurrency` per endpoint.
/// Attempts in flight when the worker stops are finished (each takes at most 10 seconds).
pub(super) async fn deliver_webhooks(shared: Shared, stopped: watch::Receiver<bool>) {
    let settings = shared.settings.webhook_delivery();
    let http = match client(&settings.policy) {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "webhooks: no HTTP client; nothing will be delivered");
            return;
        }
    };
    deliver(
        shared.pool.clone(),
        http,
        settings,
        shared.metrics.clone(),
        stopped,
    )
    .await;
}
