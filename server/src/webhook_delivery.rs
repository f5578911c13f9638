//! Delivering the webhook outbox (`webhook_deliveries`), in the workers: each due event is
//! taken for one attempt at a time (its row locked in the attempt's transaction), its body
//! rendered from the export as its status change left it, and sent as `exports_spec::webhooks`
//! says (signed as Standard Webhooks 1.0 says, 10 seconds, no redirects, a 2xx ends it; tried
//! again with exponential backoff and equal jitter until a day has passed since the event).
//! The endpoint's URL is checked again at each attempt, and the client's resolver connects
//! only to the public addresses a name resolves to, so a name that starts resolving to a
//! private address after registration is refused at connection.

use std::time::Duration;

use chrono::Utc;
use exports_spec::webhook_url::UrlPolicy;
use exports_spec::webhooks::{self, Attempt, Event, Retries};

use crate::db::exports::ExportRow;
use crate::db::webhooks::{self as outbox, DueDelivery};
use crate::metrics::Metrics;
use crate::throughput::Rates;

/// How deliveries are made and retried.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub policy: UrlPolicy,
    pub retries: Retries,
    /// Attempts made at once by one worker process.
    pub concurrency: usize,
    /// How often an idle worker looks for due events.
    pub poll: Duration,
}

/// The HTTP client of deliveries (`exports_spec::webhooks::client`).
pub fn client(policy: &UrlPolicy) -> anyhow::Result<reqwest::Client> {
    webhooks::client(policy, concat!("exports-webhooks/", env!("CARGO_PKG_VERSION")))
}

/// Takes up to `concurrency` due events, makes one attempt of each at once, and records the
/// outcomes, all in one transaction that holds their rows: the delivered ones in one statement,
/// each failure on its own (tried again later, or given up after `retry_for`). Returns how
/// many were attempted.
pub async fn attempt_due(
    pool: &deadpool_postgres::Pool,
    http: &reqwest::Client,
    settings: &DeliverySettings,
    metrics: &Metrics,
) -> anyhow::Result<usize> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let due = outbox::take_due(&*transaction, settings.concurrency as i64).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let attempted_at = Utc::now();
    let outcomes = futures::future::join_all(due.iter().map(|delivery| async move {
        if delivery.endpoint_deleted {
            Attempt::Failed {
                status: None,
                error: "the endpoint was deleted".to_string(),
            }
        } else {
            send(http, &settings.policy, delivery).await
        }
    }))
    .await;
    let delivered: Vec<(uuid::Uuid, u16)> = due
        .iter()
        .zip(&outcomes)
        .filter_map(|(delivery, outcome)| match outcome {
            Attempt::Delivered(status) => Some((delivery.id, *status)),
            Attempt::Failed { .. } => None,
        })
        .collect();
    let delays = if delivered.is_empty() {
        Vec::new()
    } else {
        outbox::record_delivered(&*transaction, &delivered, attempted_at).await?
    };
    let (mut failed, mut given_up) = (0, 0);
    for (delivery, outcome) in due.iter().zip(outcomes) {
        let Attempt::Failed { status, error } = outcome else {
            continue;
        };
        failed += 1;
        let age = (Utc::now() - delivery.occurred_at).to_std().unwrap_or_default();
        let retry_in = (!delivery.endpoint_deleted)
            .then(|| settings.retries.after(delivery.attempt.max(1) as u32, age))
            .flatten();
        match retry_in {
            Some(retry_in) => {
                tracing::info!(delivery_id = %delivery.id, endpoint_id = %delivery.endpoint_id, attempt = delivery.attempt, %error, retry_in_ms = retry_in.as_millis() as u64, "webhook: attempt failed")
            }
            None => {
                given_up += 1;
                tracing::warn!(delivery_id = %delivery.id, endpoint_id = %delivery.endpoint_id, attempts = delivery.attempt, %error, "webhook: gave up");
            }
        }
        outbox::record_failure(&*transaction, delivery.id, attempted_at, status, &error, retry_in).await?;
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
    Ok(due.len())
}

async fn send(http: &reqwest::Client, policy: &UrlPolicy, delivery: &DueDelivery) -> Attempt {
    let export = match ExportRow::from_snapshot(&delivery.export) {
        Ok(row) => row.to_api(&Rates::default()),
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
