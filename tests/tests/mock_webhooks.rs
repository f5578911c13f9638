//! The mock delivers webhooks too (issue 13, item 6): in its stateful mode it keeps endpoints,
//! and when a mock export finishes or is cancelled it sends the signed event to the endpoints
//! registered for it, verified here by the official Standard Webhooks library, retried with
//! the same `webhook-id` after a failure, signed with a rotated secret, and not sent to a
//! deleted endpoint. The mock's clock is the test's: an export finishes when the test says.

use std::time::Duration;

use exports_mock::{Clock, ManualClock, MockOptions, RunningMock};
use exports_spec::webhooks::Retries;
use exports_spec::Spec;
use exports_tests::receiver::{verify, Received, Receiver, Step};
use serde_json::{json, Value};

const KEY: &str = "exk_frontendfrontendfrontendfrontendfrontend12";
/// How long the test waits at most for the mock to record an attempt.
const WAIT_AT_MOST: Duration = Duration::from_secs(60);

struct Mocked {
    mock: RunningMock,
    clock: ManualClock,
    http: reqwest::Client,
    spec: Spec,
}

impl Mocked {
    async fn start() -> anyhow::Result<Self> {
        let clock = ManualClock::default();
        let options = MockOptions {
            clock: Clock::Manual(clock.clone()),
            // Retries in milliseconds: the receivers are the test's own.
            webhook_retries: Retries {
                first_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(100),
                retry_for: exports_spec::webhooks::RETRY_FOR,
            },
            ..MockOptions::default()
        };
        let mock = RunningMock::start(Spec::bundled(), "127.0.0.1:0".parse()?, options).await?;
        Ok(Self {
            mock,
            clock,
            http: reqwest::Client::new(),
            spec: Spec::bundled(),
        })
    }

    /// Sends a request and checks the answer against the spec; returns its status and body.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method.parse()?, format!("http://{}{path}", self.mock.local_addr))
            .bearer_auth(KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let bytes = response.bytes().await?;
        if let Err(problems) = self
            .spec
            .validate_response(method, path, status, &headers, &bytes)
        {
            anyhow::bail!("{method} {path}: the mock's answer breaks the spec: {problems:?}");
        }
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// Registers `url`, for `event_types` (all when `None`); returns the endpoint's id and secret.
    async fn register(&self, url: &str, event_types: Option<&[&str]>) -> anyhow::Result<(String, String)> {
        let mut body = json!({ "url": url });
        if let Some(types) = event_types {
            body["event_types"] = json!(types);
        }
        let (status, endpoint) = self
            .call("POST", "/api/v1/webhooks/endpoints", Some(body))
            .await?;
        anyhow::ensure!(status == 201, "registration answered {status}: {endpoint}");
        Ok((text(&endpoint["endpoint_id"]), text(&endpoint["secret"])))
    }

    /// Creates an export; returns its id and how long it takes.
    async fn create(&self) -> anyhow::Result<(String, Duration)> {
        let (status, accepted) = self
            .call("POST", "/api/v1/exports/users", Some(json!({"format": "csv"})))
            .await?;
        anyhow::ensure!(status == 202, "create answered {status}: {accepted}");
        let seconds = accepted["estimated_seconds"].as_u64().unwrap_or_default();
        Ok((text(&accepted["export_id"]), Duration::from_secs(seconds)))
    }

    async fn cancel(&self, export_id: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .call("POST", &format!("/api/v1/exports/users/{export_id}/cancel"), None)
            .await?;
        anyhow::ensure!(status == 200, "cancel answered {status}: {body}");
        Ok(())
    }

    /// The endpoint's deliveries once the newest is no longer `pending` (the mock records an
    /// attempt just after its answer).
    async fn settled_deliveries(&self, endpoint_id: &str) -> anyhow::Result<Vec<Value>> {
        let path = format!("/api/v1/webhooks/endpoints/{endpoint_id}/deliveries");
        let deadline = tokio::time::Instant::now() + WAIT_AT_MOST;
        loop {
            let (status, list) = self.call("GET", &path, None).await?;
            anyhow::ensure!(status == 200, "deliveries answered {status}: {list}");
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let settled = items.first().is_some_and(|newest| newest["status"] != "pending");
            if settled || tokio::time::Instant::now() > deadline {
                return Ok(items);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The event a receiver got: checked against the spec's `WebhookEvent` and returned.
    fn event(&self, received: &Received) -> anyhow::Result<Value> {
        let event: Value = serde_json::from_slice(&received.body)?;
        let schema = json!({"$ref": "#/components/schemas/WebhookEvent"});
        if let Err(problems) = self.spec.validate(&schema, &event) {
            anyhow::bail!("the event breaks the spec: {problems:?}\n{event}");
        }
        Ok(event)
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn webhook_id(received: &Received) -> String {
    received
        .headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_finished_mock_export_is_delivered_signed_and_retried_after_a_failure() -> anyhow::Result<()> {
    let mocked = Mocked::start().await?;
    let mut receiver = Receiver::start(vec![Step::Answer(500)]).await?;
    let (endpoint_id, secret) = mocked.register(&receiver.url(), None).await?;
    let (export_id, takes) = mocked.create().await?;
    mocked.clock.advance(takes + Duration::from_secs(1));

    let refused = receiver.next().await?;
    let taken = receiver.next().await?;
    for received in [&refused, &taken] {
        verify(&secret, received).map_err(|e| anyhow::anyhow!("not verified: {e:?}"))?;
    }
    assert!(
        verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &taken).is_err(),
        "another secret does not verify"
    );
    assert_eq!(
        webhook_id(&refused),
        webhook_id(&taken),
        "a retry keeps the webhook-id"
    );
    let event = mocked.event(&taken)?;
    assert_eq!(event["type"], "export.done");
    assert_eq!(event["data"]["export_id"], export_id.as_str());
    assert_eq!(event["data"]["status"], "done");
    assert_eq!(event["data"]["download_url"], Value::Null, "no short-lived link");
    // The client's helper, for Rust receivers, takes what the mock sends.
    let typed = exports_client::webhooks::verify_delivery(&secret, &taken.headers, &taken.body)?;
    assert_eq!(typed.data.export_id.to_string(), export_id);

    let deliveries = mocked.settled_deliveries(&endpoint_id).await?;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let delivery = &deliveries[0];
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(delivery["last_response_status"], 200);
    assert_eq!(delivery["delivery_id"], webhook_id(&taken).as_str());
    assert_eq!(delivery["event_type"], "export.done");
    mocked.mock.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn cancelled_rotated_filtered_and_deleted_endpoints_get_what_the_server_would_send(
) -> anyhow::Result<()> {
    let mocked = Mocked::start().await?;
    let mut receiver = Receiver::start(vec![]).await?;
    let (endpoint_id, old_secret) = mocked
        .register(&receiver.url(), Some(&["export.cancelled"]))
        .await?;

    // An export that finishes is not announced to an endpoint registered for cancellations
    // only; the cancelled one that follows is.
    let (finished, takes) = mocked.create().await?;
    mocked.clock.advance(takes + Duration::from_secs(1));
    let (cancelled, _) = mocked.create().await?;
    mocked.cancel(&cancelled).await?;
    let received = receiver.next().await?;
    let event = mocked.event(&received)?;
    assert_eq!(event["type"], "export.cancelled");
    assert_eq!(event["data"]["export_id"], cancelled.as_str(), "not {finished}");
    assert_eq!(event["data"]["status"], "cancelled");
    verify(&old_secret, &received).map_err(|e| anyhow::anyhow!("not verified: {e:?}"))?;

    // A rotated secret signs the next delivery.
    let (status, rotated) = mocked
        .call(
            "POST",
            &format!("/api/v1/webhooks/endpoints/{endpoint_id}/rotate-secret"),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = text(&rotated["secret"]);
    assert_ne!(new_secret, old_secret);
    let (next, _) = mocked.create().await?;
    mocked.cancel(&next).await?;
    let received = receiver.next().await?;
    verify(&new_secret, &received).map_err(|e| anyhow::anyhow!("not verified: {e:?}"))?;
    assert!(
        verify(&old_secret, &received).is_err(),
        "the old secret no longer signs"
    );

    // A deleted endpoint gets nothing more; another endpoint still does.
    let (status, _) = mocked
        .call(
            "DELETE",
            &format!("/api/v1/webhooks/endpoints/{endpoint_id}"),
            None,
        )
        .await?;
    assert_eq!(status, 204);
    let mut other = Receiver::start(vec![]).await?;
    mocked.register(&other.url(), None).await?;
    let (last, _) = mocked.create().await?;
    mocked.cancel(&last).await?;
    let event = mocked.event(&other.next().await?)?;
    assert_eq!(event["data"]["export_id"], last.as_str());
    assert!(
        receiver.try_next().is_none(),
        "the deleted endpoint got a delivery"
    );
    // Its last deliveries still say what happened, as on the server.
    let deliveries = mocked.settled_deliveries(&endpoint_id).await?;
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    assert!(
        deliveries.iter().all(|d| d["status"] == "delivered"),
        "{deliveries:?}"
    );
    mocked.mock.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_mock_refuses_what_the_server_refuses() -> anyhow::Result<()> {
    let mocked = Mocked::start().await?;
    let (status, refused) = mocked
        .call(
            "POST",
            "/api/v1/webhooks/endpoints",
            Some(json!({"url": "https://hooks.invalid/exports"})),
        )
        .await?;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "webhook_url_refused");
    assert_eq!(refused["error"]["details"][0]["field"], "url");
    let receiver = Receiver::start(vec![]).await?;
    for _ in 0..exports_spec::webhooks::MAX_ENDPOINTS_PER_USER {
        mocked.register(&receiver.url(), None).await?;
    }
    let (status, refused) = mocked
        .call(
            "POST",
            "/api/v1/webhooks/endpoints",
            Some(json!({"url": receiver.url()})),
        )
        .await?;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "too_many_webhook_endpoints");
    let (status, listed) = mocked.call("GET", "/api/v1/webhooks/endpoints", None).await?;
    assert_eq!(status, 200);
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(exports_spec::webhooks::MAX_ENDPOINTS_PER_USER)
    );
    assert!(
        listed["items"][0].get("secret").is_none(),
        "a list shows no secret"
    );
    mocked.mock.shutdown().await;
    Ok(())
}
