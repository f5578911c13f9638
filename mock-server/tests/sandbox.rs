//! The mock as a test sandbox (`--sandbox`): its controls under `/__mock/` reset its state,
//! move its clock, make exports and webhook deliveries fail, and make the next requests to an
//! operation answer a documented error; off, they do not exist.

use exports_mock::{Clock, ManualClock, MockOptions, RunningMock};
use exports_spec::Spec;
use serde_json::{json, Value};

const EXPORTS: &str = "/api/v1/exports/users";

/// A mock on a port of its own, and a client of it with one key.
struct Sandboxed {
    mock: RunningMock,
    base: String,
    http: reqwest::Client,
}

impl Sandboxed {
    /// On a clock that only the sandbox's `/__mock/clock` moves, so that no test depends on
    /// how fast the machine is (the binary's sandbox moves the machine's clock, shifted).
    async fn start(sandbox: bool) -> Self {
        let options = MockOptions {
            sandbox,
            clock: Clock::Manual(ManualClock::default()),
            ..MockOptions::default()
        };
        let mock = RunningMock::start(Spec::bundled(), "127.0.0.1:0".parse().unwrap(), options)
            .await
            .unwrap();
        let base = format!("http://{}", mock.local_addr);
        Self {
            mock,
            base,
            http: reqwest::Client::new(),
        }
    }

    /// A control request: its status and its JSON body (null when it has none).
    async fn control(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self.http.post(format!("{}/__mock/{path}", self.base)).json(&body);
        answer(request).await
    }

    async fn fault(&self, operation: &str, status: u16) -> (u16, Value) {
        self.control("faults", json!({"operation": operation, "status": status}))
            .await
    }

    async fn advance(&self, seconds: u64) -> (u16, Value) {
        self.control("clock", json!({"advance_seconds": seconds})).await
    }

    async fn create(&self) -> reqwest::Response {
        (self.http.post(format!("{}{EXPORTS}", self.base)))
            .bearer_auth("exk_frontend")
            .json(&json!({"format": "csv"}))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        answer(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth("exk_frontend"),
        )
        .await
    }

    async fn listed(&self) -> usize {
        let (_, list) = self.get(EXPORTS).await;
        list["items"].as_array().unwrap().len()
    }
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The detail of a `400`: its field, and the values allowed.
fn refused(status: u16, body: &Value) -> (&str, Vec<&str>) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    let detail = &body["error"]["details"][0];
    let allowed = (detail["allowed"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    (detail["field"].as_str().unwrap(), allowed)
}

#[tokio::test]
async fn queued_faults_answer_the_next_requests_as_the_spec_documents_them() {
    let sandboxed = Sandboxed::start(true).await;
    let (status, queued) = sandboxed
        .control(
            "faults",
            json!({"operation": "createUserExport", "status": 429, "count": 2}),
        )
        .await;
    assert_eq!(status, 200, "{queued}");
    assert_eq!(queued["queued"], 2);
    for _ in 0..2 {
        let limited = sandboxed.create().await;
        assert_eq!(limited.status(), 429);
        assert!(limited.headers().contains_key("retry-after"), "{limited:?}");
        let body: Value = limited.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "the envelope: {body}");
    }
    // Then the operation answers as before; other operations never saw the fault.
    assert_eq!(sandboxed.create().await.status(), 202);
    sandboxed.fault("listExports", 503).await;
    let unavailable = (sandboxed.http.get(format!("{}{EXPORTS}", sandboxed.base)))
        .bearer_auth("exk_frontend")
        .send()
        .await
        .unwrap();
    assert_eq!(unavailable.status(), 503);
    assert!(unavailable.headers().contains_key("retry-after"));
    assert_eq!(sandboxed.listed().await, 1);
    sandboxed.mock.shutdown().await;
}

#[tokio::test]
async fn moving_the_clock_forward_finishes_exports_now() {
    let sandboxed = Sandboxed::start(true).await;
    let created: Value = sandboxed.create().await.json().await.unwrap();
    let path = format!("{EXPORTS}/{}", created["export_id"].as_str().unwrap());
    let (_, before) = sandboxed.get(&path).await;
    assert_ne!(before["status"], "done", "{before}");
    let (status, moved) = sandboxed.advance(3600).await;
    assert_eq!(status, 200, "{moved}");
    let now: chrono::DateTime<chrono::Utc> = moved["now"].as_str().unwrap().parse().unwrap();
    let created_at: chrono::DateTime<chrono::Utc> = before["created_at"].as_str().unwrap().parse().unwrap();
    // An hour on from the create, on a clock nothing else moved (`now` is to the millisecond).
    let moved_by = (now - created_at).num_milliseconds();
    assert!(moved_by.abs_diff(3_600_000) <= 1, "{moved} after {before}");
    let (_, after) = sandboxed.get(&path).await;
    assert_eq!(after["status"], "done", "{after}");
    assert_eq!(sandboxed.get(&format!("{path}/download")).await.0, 200);
    let (status, body) = sandboxed.control("clock", json!({"advance_seconds": -5})).await;
    assert_eq!(refused(status, &body).0, "advance_seconds");
    sandboxed.mock.shutdown().await;
}

#[tokio::test]
async fn reset_forgets_every_export_and_fault() {
    let sandboxed = Sandboxed::start(true).await;
    assert_eq!(sandboxed.create().await.status(), 202);
    sandboxed.fault("createUserExport", 503).await;
    assert_eq!(sandboxed.control("reset", Value::Null).await.0, 204);
    assert_eq!(sandboxed.create().await.status(), 202, "the fault is gone");
    assert_eq!(sandboxed.listed().await, 1, "only the export made since");
    sandboxed.mock.shutdown().await;
}

#[tokio::test]
async fn an_unknown_operation_or_status_is_a_clear_400() {
    let sandboxed = Sandboxed::start(true).await;
    let (status, body) = sandboxed.fault("createExport", 429).await;
    let (field, allowed) = refused(status, &body);
    assert_eq!(field, "operation");
    assert!(allowed.contains(&"createUserExport"), "{body}");

    let (status, body) = sandboxed.fault("createUserExport", 418).await;
    let (field, allowed) = refused(status, &body);
    assert_eq!(field, "status");
    assert!(allowed.contains(&"429") && allowed.contains(&"503"), "{body}");
    assert!(!allowed.contains(&"202"), "errors only: {body}");

    let (status, body) = sandboxed
        .control(
            "faults",
            json!({"operation": "createUserExport", "status": 429, "count": 0}),
        )
        .await;
    assert_eq!(refused(status, &body).0, "count");
    let (status, body) = sandboxed
        .control(
            "faults",
            json!({"operation": "createUserExport", "status": 429, "times": 2}),
        )
        .await;
    let (field, allowed) = refused(status, &body);
    assert_eq!((field, allowed), ("times", vec!["operation", "status", "count"]));
    assert_eq!(sandboxed.control("clocks", json!({})).await.0, 404);
    // Nothing was queued by the refused requests.
    assert_eq!(sandboxed.create().await.status(), 202);
    sandboxed.mock.shutdown().await;
}

#[tokio::test]
async fn without_the_flag_there_are_no_controls() {
    let sandboxed = Sandboxed::start(false).await;
    let (status, body) = sandboxed.fault("createUserExport", 429).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(sandboxed.create().await.status(), 202);
    sandboxed.mock.shutdown().await;
}

#[tokio::test]
async fn exports_made_to_fail_fail_and_done_ones_expire_a_day_later() {
    let sandboxed = Sandboxed::start(true).await;
    let failure = json!({"error_message": "The storage is down; create a new export."});
    assert_eq!(sandboxed.control("failing-exports", failure).await.0, 204);
    let failing: Value = sandboxed.create().await.json().await.unwrap();
    let done: Value = sandboxed.create().await.json().await.unwrap();
    let path = |export: &Value| format!("{EXPORTS}/{}", export["export_id"].as_str().unwrap());
    sandboxed.advance(3600).await;

    let (_, failed) = sandboxed.get(&path(&failing)).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["error_message"],
        "The storage is down; create a new export."
    );
    assert!(
        failed["download_url"].is_null() && failed["expires_at"].is_null(),
        "{failed}"
    );
    let (status, not_ready) = sandboxed.get(&format!("{}/download", path(&failing))).await;
    assert_eq!(status, 409, "{not_ready}");
    let (_, finished) = sandboxed.get(&path(&done)).await;
    assert_eq!(
        finished["status"], "done",
        "only the next export fails: {finished}"
    );

    sandboxed.advance(24 * 3600).await;
    let (_, expired) = sandboxed.get(&path(&done)).await;
    assert_eq!(expired["status"], "expired", "{expired}");
    assert!(expired["download_url"].is_null(), "{expired}");
    let (status, gone) = sandboxed.get(&format!("{}/download", path(&done))).await;
    assert_eq!(status, 410, "{gone}");
    assert_eq!(gone["error"]["code"], "export_expired");
    sandboxed.mock.shutdown().await;
}

#[tokio::test]
async fn deliveries_to_an_endpoint_can_be_made_to_fail() {
    let sandboxed = Sandboxed::start(true).await;
    let endpoint = json!({"url": "http://127.0.0.1:9/hooks", "event_types": ["export.done"]});
    let request = (sandboxed
        .http
        .post(format!("{}/api/v1/webhooks/endpoints", sandboxed.base)))
    .bearer_auth("exk_frontend")
    .json(&endpoint);
    let (_, endpoint) = answer(request).await;
    let endpoint_id = endpoint["endpoint_id"].as_str().unwrap().to_string();
    let failing = json!({"endpoint_id": endpoint_id});
    assert_eq!(sandboxed.control("failing-deliveries", failing).await.0, 204);
    sandboxed.create().await;
    sandboxed.advance(3600).await;
    let deliveries = format!("/api/v1/webhooks/endpoints/{endpoint_id}/deliveries");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let delivery = loop {
        let (_, list) = sandboxed.get(&deliveries).await;
        let first = list["items"].as_array().and_then(|items| items.first()).cloned();
        if let Some(first) = first.filter(|first| first["attempts"].as_u64() >= Some(1)) {
            break first;
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempt: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(delivery["status"], "pending", "retried later: {delivery}");
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.contains("sandbox"), "{delivery}");
    let unknown = json!({"endpoint_id": "7d1f0c2e-0000-4000-8000-000000000000"});
    let (status, body) = sandboxed.control("failing-deliveries", unknown).await;
    assert_eq!(refused(status, &body).0, "endpoint_id");
    sandboxed.mock.shutdown().await;
}
