//! Delivering the webhook outbox (`webhook_deliveries`), in the workers: each due event is
//! taken for one attempt at a time (its row locked in the attempt's transaction), its body
//! rendered from the export as its status change left it, signed as Standard Webhooks 1.0 says (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), and POSTed with a
//! 10-second limit and no redirects followed. A 2xx answer ends it; anything else is tried
//! again with exponential backoff and full jitter until a day has passed since the event.
//! The endpoint's URL is checked again at each attempt (`webhook_url::check_form`), and the
//! client's resolver connects only to the public addresses a name resolves to, so a name that
//! starts resolving to a private address after registration is refused at connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{KeyInit, Mac};
use serde_json::json;

use crate::db::exports::ExportRow;
use crate::db::webhooks::{self, DueDelivery};
use crate::metrics::Metrics;
use crate::throughput::Rates;
use crate::webhook_url::{self, UrlPolicy};

/// One attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How deliveries are made and retried.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub policy: UrlPolicy,
    /// Backoff before the second attempt, doubled for each later one (with full jitter).
    pub first_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// How long after the event it is still tried (at least a day, in production).
    pub retry_for: Duration,
    /// Attempts made at once by one worker process.
    pub concurrency: usize,
    /// How often an idle worker looks for due events.
    pub poll: Duration,
}

impl DeliverySettings {
    /// Backoff after failed attempt `attempt` (1 for the first): exponential with full jitter.
    fn backoff(&self, attempt: i32) -> Duration {
        let ceiling = self
            .first_backoff
            .saturating_mul(1 << (attempt.clamp(1, 20) - 1))
            .min(self.max_backoff);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(millis / 2 + rand::random_range(0..=millis / 2))
    }
}

/// Standard Webhooks' signature header value for one attempt.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> anyhow::Result<String> {
    let key = BASE64.decode(secret.trim_start_matches("whsec_"))?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key)?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// The event's body: its type, when it happened, and the export as `getExport` showed it then
/// (without a download link: links are short-lived; the receiver asks `getExport` for one).
pub fn event_body(
    event_type: &str,
    occurred_at: DateTime<Utc>,
    export: &serde_json::Value,
) -> anyhow::Result<Vec<u8>> {
    let export = ExportRow::from_snapshot(export)?.to_api(&Rates::default());
    Ok(serde_json::to_vec(&json!({
        "type": event_type,
        "timestamp": occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": export,
    }))?)
}

/// The HTTP client of deliveries: no redirects, the attempt's time limit, and a resolver that
/// hands out only addresses the policy allows.
pub fn client(policy: UrlPolicy) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ATTEMPT_TIMEOUT)
        .dns_resolver(Arc::new(AllowedAddresses(policy)))
        .user_agent(concat!("exports-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

struct AllowedAddresses(UrlPolicy);

impl reqwest::dns::Resolve for AllowedAddresses {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.0.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|address| allow_private || webhook_url::special_purpose(address.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered(u16),
    Failed { status: Option<u16>, error: String },
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
    let due = webhooks::take_due(&*transaction, settings.concurrency as i64).await?;
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
            send(http, settings.policy, delivery).await
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
        webhooks::record_delivered(&*transaction, &delivered, attempted_at).await?
    };
    let (mut failed, mut given_up) = (0, 0);
    for (delivery, outcome) in due.iter().zip(outcomes) {
        let Attempt::Failed { status, error } = outcome else {
            continue;
        };
        failed += 1;
        let age = (Utc::now() - delivery.occurred_at).to_std().unwrap_or_default();
        let retry_in = (!delivery.endpoint_deleted && age < settings.retry_for)
            .then(|| settings.backoff(delivery.attempt));
        match retry_in {
            Some(retry_in) => {
                tracing::info!(delivery_id = %delivery.id, endpoint_id = %delivery.endpoint_id, attempt = delivery.attempt, %error, retry_in_ms = retry_in.as_millis() as u64, "webhook: attempt failed")
            }
            None => {
                given_up += 1;
                tracing::warn!(delivery_id = %delivery.id, endpoint_id = %delivery.endpoint_id, attempts = delivery.attempt, %error, "webhook: gave up");
            }
        }
        webhooks::record_failure(&*transaction, delivery.id, attempted_at, status, &error, retry_in).await?;
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

async fn send(http: &reqwest::Client, policy: UrlPolicy, delivery: &DueDelivery) -> Attempt {
    let failed = |error: String| Attempt::Failed { status: None, error };
    // The URL again: its scheme, and a host given as an address, which no resolver sees.
    let url = match webhook_url::check_form(policy, &delivery.url) {
        Ok(url) => url,
        Err(issue) => return failed(format!("the URL {issue}")),
    };
    let body = match event_body(&delivery.event_type, delivery.occurred_at, &delivery.export) {
        Ok(body) => body,
        Err(error) => return failed(format!("the event could not be rendered: {error:#}")),
    };
    let id = delivery.id.to_string();
    let timestamp = Utc::now().timestamp();
    let signature = match signature(&delivery.secret, &id, timestamp, &body) {
        Ok(signature) => signature,
        Err(error) => return failed(format!("the secret cannot sign: {error}")),
    };
    let sent = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Attempt::Delivered(response.status().as_u16()),
        Ok(response) => Attempt::Failed {
            status: Some(response.status().as_u16()),
            error: format!("the endpoint answered {}", response.status()),
        },
        Err(error) => failed(error_chain(&error)),
    }
}

/// An error and its causes, on one line (reqwest's own message omits them).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_standard_webhooks_says() {
        // The example of the Standard Webhooks specification (its reference libraries' tests).
        let signed = signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn backoff_grows_with_full_jitter_up_to_its_ceiling() {
        let settings = DeliverySettings {
            policy: UrlPolicy { allow_private: false },
            first_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
            retry_for: Duration::from_secs(86400),
            concurrency: 1,
            poll: Duration::from_secs(1),
        };
        for (attempt, ceiling) in [(1, 10), (2, 20), (3, 40), (12, 3600)] {
            let backoff = settings.backoff(attempt);
            let ceiling = Duration::from_secs(ceiling);
            assert!(
                backoff >= ceiling / 2 && backoff <= ceiling,
                "{attempt}: {backoff:?}"
            );
        }
    }
}
