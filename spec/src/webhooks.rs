//! Webhook deliveries as the server and the mock both make them (the spec's `x-webhooks`):
//! Standard Webhooks 1.0 signatures (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), the event's body,
//! one attempt (10 seconds, no redirects followed, a 2xx ends it) and the retry schedule
//! (exponential backoff with equal jitter, for a day). Where the events come from (the
//! server's outbox, the mock's clock) and where attempts are recorded is each side's own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};

use crate::webhook_url::{self, UrlPolicy};

/// Endpoints one user may register.
pub const MAX_ENDPOINTS_PER_USER: usize = 10;

/// Deliveries `listWebhookDeliveries` shows: the newest.
pub const RECENT_DELIVERIES: usize = 50;

/// The event types, as the spec's `WebhookEventType` names them.
pub const EVENT_TYPES: [&str; 4] = [
    "export.done",
    "export.failed",
    "export.cancelled",
    "export.expired",
];

/// The event types an endpoint is registered for: each asked once, in the order asked
/// (`dedup` alone would keep repeats that are not side by side).
pub fn each_once<T: PartialEq>(asked: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut once = Vec::new();
    for item in asked {
        if !once.contains(&item) {
            once.push(item);
        }
    }
    once
}

/// One attempt's time limit.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long after its event a delivery is still attempted, at least.
pub const RETRY_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// A new signing secret: `whsec_` and the base64 of 24 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", BASE64.encode(bytes))
}

/// Standard Webhooks' signature header value for one attempt.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> anyhow::Result<String> {
    let key = BASE64.decode(secret.trim_start_matches("whsec_"))?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key)?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// The event's body (`WebhookEvent`): its type, when it happened, and the export as `getExport`
/// showed it then, without its download link (links are short-lived; the receiver asks
/// `getExport` or `downloadExport` for the file).
pub fn event_body(event_type: &str, occurred_at: DateTime<Utc>, export: &Value) -> Vec<u8> {
    let mut export = export.clone();
    for link in ["download_url", "download_expires_at"] {
        if let Some(value) = export.get_mut(link) {
            *value = Value::Null;
        }
    }
    serde_json::to_vec(&json!({
        "type": event_type,
        "timestamp": occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": export,
    }))
    .expect("JSON serialises")
}

/// When failed attempts are tried again.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// Backoff before the second attempt, doubled for each later one (with equal jitter).
    pub first_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// How long after the event it is still tried (at least a day, in production).
    pub retry_for: Duration,
}

impl Retries {
    /// Backoff after failed attempt `attempt` (1 for the first): `crate::backoff::equal_jitter`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        crate::backoff::equal_jitter(self.first_backoff, attempt, self.max_backoff)
    }

    /// The backoff before the next attempt, `None` once the event is too old to try again.
    pub fn after(&self, attempt: u32, age: Duration) -> Option<Duration> {
        (age < self.retry_for).then(|| self.backoff(attempt))
    }
}

/// The HTTP client of deliveries: no redirects, the attempt's time limit, and a resolver that
/// hands out only addresses the policy allows, so that a name that starts resolving to a
/// private address after registration is refused at connection. No proxy, whatever the
/// environment says (`HTTPS_PROXY`, `ALL_PROXY`, which reqwest reads by default): through a
/// proxy that resolver never runs, and the proxy would reach whatever a name resolves to.
pub fn client(policy: &UrlPolicy, user_agent: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ATTEMPT_TIMEOUT)
        .dns_resolver(Arc::new(AllowedAddresses(policy.clone())))
        .user_agent(user_agent)
        .build()?)
}

struct AllowedAddresses(UrlPolicy);

impl reqwest::dns::Resolve for AllowedAddresses {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let allowed: Vec<SocketAddr> = policy
                .lookup(&host, 0)
                .await?
                .into_iter()
                .filter(|address| {
                    policy.allow_private || webhook_url::special_purpose(address.ip()).is_none()
                })
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered(u16),
    Failed { status: Option<u16>, error: String },
}

/// One event for one endpoint: the `webhook-id` of every attempt, and the body.
pub struct Event<'a> {
    pub id: &'a str,
    pub body: &'a [u8],
}

/// One attempt: the URL checked again (its scheme, and a host given as an address, which no
/// resolver sees), signed with `secret` at the attempt's time, and POSTed. A failure's text
/// names the URL by its scheme, host and port only (`origin`): a path or query may carry the
/// receiver's own secret (Slack-style URLs do), and the text is logged and shown to the user.
pub async fn attempt(
    http: &reqwest::Client,
    policy: &UrlPolicy,
    url: &str,
    secret: &str,
    event: &Event<'_>,
) -> Attempt {
    let failed = |error: String| Attempt::Failed { status: None, error };
    let url = match webhook_url::check_form(policy, url) {
        Ok(url) => url,
        Err(issue) => return failed(format!("the URL {issue}")),
    };
    let timestamp = Utc::now().timestamp();
    let signature = match signature(secret, event.id, timestamp, event.body) {
        Ok(signature) => signature,
        Err(error) => return failed(format!("the secret cannot sign: {error}")),
    };
    let sent = http
        .post(url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(event.body.to_vec())
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Attempt::Delivered(response.status().as_u16()),
        Ok(response) => Attempt::Failed {
            status: Some(response.status().as_u16()),
            error: format!("the endpoint answered {}", response.status()),
        },
        Err(error) => failed(format!("{}: {}", origin(&url), error_chain(&error.without_url()))),
    }
}

/// `scheme://host:port` of a URL: what may be said of it where its path and query may not.
pub fn origin(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
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
    fn a_day_old_event_is_given_up() {
        let retries = Retries {
            first_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
            retry_for: RETRY_FOR,
        };
        assert!(retries.after(3, RETRY_FOR - Duration::from_secs(1)).is_some());
        assert!(retries.after(30, RETRY_FOR).is_none());
    }

    #[tokio::test]
    async fn a_failed_attempt_names_the_origin_and_not_the_path() {
        // A port nothing listens on: the connection is refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let policy = UrlPolicy {
            allow_private: true,
            ..UrlPolicy::default()
        };
        let http = client(&policy, "test").unwrap();
        let url = format!("http://127.0.0.1:{port}/services/T0/B0/pathsecret?token=querysecret");
        let event = Event {
            id: "msg_1",
            body: b"{}",
        };
        let attempt = attempt(&http, &policy, &url, &new_secret(), &event).await;
        let Attempt::Failed { status: None, error } = attempt else {
            panic!("{attempt:?}")
        };
        assert!(
            error.starts_with(&format!("http://127.0.0.1:{port}: ")),
            "{error}"
        );
        assert!(
            !error.contains("pathsecret") && !error.contains("querysecret") && !error.contains("/services"),
            "{error}"
        );
    }

    #[test]
    fn the_event_carries_no_link() {
        let export = json!({"export_id": "x", "download_url": "https://x/y", "download_expires_at": "z"});
        let body: Value = serde_json::from_slice(&event_body("export.done", Utc::now(), &export)).unwrap();
        assert_eq!(body["type"], "export.done");
        assert_eq!(body["data"]["download_url"], Value::Null);
        assert_eq!(body["data"]["download_expires_at"], Value::Null);
        assert_eq!(body["data"]["export_id"], "x");
    }
}
