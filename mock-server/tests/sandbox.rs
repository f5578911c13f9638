//! The mock as a test sandbox (`--sandbox`): its controls under `/__mock/` reset its state and
//! make the next requests to an operation answer a documented error; off, they do not exist.

use exports_mock::{MockOptions, RunningMock};
use exports_spec::Spec;
use serde_json::{json, Value};

async fn start(sandbox: bool) -> (RunningMock, String) {
    let options = MockOptions {
        sandbox,
        ..MockOptions::default()
    };
    let mock = RunningMock::start(Spec::bundled(), "127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let base = format!("http://{}", mock.local_addr);
    (mock, base)
}

const EXPORTS: &str = "/api/v1/exports/users";

async fn create(http: &reqwest::Client, base: &str) -> reqwest::Response {
    http.post(format!("{base}{EXPORTS}"))
        .bearer_auth("exk_frontend")
        .json(&json!({"format": "csv"}))
        .send()
        .await
        .unwrap()
}

async fn control(http: &reqwest::Client, base: &str, path: &str, body: Value) -> (u16, Value) {
    let response = http
        .post(format!("{base}/__mock/{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn queued_faults_answer_the_next_requests_as_the_spec_documents_them() {
    let (mock, base) = start(true).await;
    let http = reqwest::Client::new();
    let (status, queued) = control(
        &http,
        &base,
        "faults",
        json!({"operation": "createUserExport", "status": 429, "count": 2}),
    )
    .await;
    assert_eq!(status, 200, "{queued}");
    assert_eq!(queued["queued"], 2);
    for _ in 0..2 {
        let limited = create(&http, &base).await;
        assert_eq!(limited.status(), 429);
        assert!(limited.headers().contains_key("retry-after"), "{limited:?}");
        let body: Value = limited.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "the envelope: {body}");
    }
    // Then the operation answers as before; other operations never saw the fault.
    assert_eq!(create(&http, &base).await.status(), 202);
    control(
        &http,
        &base,
        "faults",
        json!({"operation": "listExports", "status": 503}),
    )
    .await;
    let list = |http: &reqwest::Client| {
        http.get(format!("{base}{EXPORTS}"))
            .bearer_auth("exk_frontend")
            .send()
    };
    let unavailable = list(&http).await.unwrap();
    assert_eq!(unavailable.status(), 503);
    assert!(unavailable.headers().contains_key("retry-after"));
    let listed: Value = list(&http).await.unwrap().json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    mock.shutdown().await;
}

#[tokio::test]
async fn moving_the_clock_forward_finishes_exports_now() {
    let (mock, base) = start(true).await;
    let http = reqwest::Client::new();
    let created: Value = create(&http, &base).await.json().await.unwrap();
    let id = created["export_id"].as_str().unwrap().to_string();
    let get = || async {
        let export: Value = http
            .get(format!("{base}{EXPORTS}/{id}"))
            .bearer_auth("exk_frontend")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        export
    };
    let before = get().await;
    assert_ne!(before["status"], "done", "{before}");
    let (status, moved) = control(&http, &base, "clock", json!({"advance_seconds": 3600})).await;
    assert_eq!(status, 200, "{moved}");
    let now: chrono::DateTime<chrono::Utc> = moved["now"].as_str().unwrap().parse().unwrap();
    assert!(
        now > chrono::Utc::now() + chrono::Duration::minutes(59),
        "{moved}"
    );
    let after = get().await;
    assert_eq!(after["status"], "done", "{after}");
    let download = http
        .get(format!("{base}{EXPORTS}/{id}/download"))
        .bearer_auth("exk_frontend")
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let (status, refused) = control(&http, &base, "clock", json!({"advance_seconds": -5})).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["details"][0]["field"], "advance_seconds");
    mock.shutdown().await;
}

#[tokio::test]
async fn reset_forgets_every_export_and_fault() {
    let (mock, base) = start(true).await;
    let http = reqwest::Client::new();
    assert_eq!(create(&http, &base).await.status(), 202);
    control(
        &http,
        &base,
        "faults",
        json!({"operation": "createUserExport", "status": 503}),
    )
    .await;
    let reset = http.post(format!("{base}/__mock/reset")).send().await.unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(create(&http, &base).await.status(), 202, "the fault is gone");
    let listed: Value = http
        .get(format!("{base}{EXPORTS}"))
        .bearer_auth("exk_frontend")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "only the export made since: {listed}"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn an_unknown_operation_or_status_is_a_clear_400() {
    let (mock, base) = start(true).await;
    let http = reqwest::Client::new();
    let (status, body) = control(
        &http,
        &base,
        "faults",
        json!({"operation": "createExport", "status": 429}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["field"], "operation");
    let allowed = detail["allowed"].as_array().unwrap();
    assert!(allowed.contains(&json!("createUserExport")), "{detail}");

    let (status, body) = control(
        &http,
        &base,
        "faults",
        json!({"operation": "createUserExport", "status": 418}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["field"], "status");
    let allowed = detail["allowed"].as_array().unwrap();
    assert!(
        allowed.contains(&json!("429")) && allowed.contains(&json!("503")),
        "{detail}"
    );
    assert!(!allowed.contains(&json!("202")), "errors only: {detail}");

    let (status, body) = control(
        &http,
        &base,
        "faults",
        json!({"operation": "createUserExport", "status": 429, "count": 0}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["details"][0]["field"]),
        (400, &json!("count"))
    );
    let (status, _) = control(&http, &base, "clocks", json!({})).await;
    assert_eq!(status, 404);
    // Nothing was queued by the refused requests.
    assert_eq!(create(&http, &base).await.status(), 202);
    mock.shutdown().await;
}

#[tokio::test]
async fn without_the_flag_there_are_no_controls() {
    let (mock, base) = start(false).await;
    let http = reqwest::Client::new();
    let (status, body) = control(
        &http,
        &base,
        "faults",
        json!({"operation": "createUserExport", "status": 429}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(create(&http, &base).await.status(), 202);
    mock.shutdown().await;
}

async fn get(http: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let response = http
        .get(format!("{base}{path}"))
        .bearer_auth("exk_frontend")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn exports_made_to_fail_fail_and_done_ones_expire_a_day_later() {
    let (mock, base) = start(true).await;
    let http = reqwest::Client::new();
    let (status, _) = control(
        &http,
        &base,
        "failing-exports",
        json!({"error_message": "The storage is down; create a new export."}),
    )
    .await;
    assert_eq!(status, 204);
    let failing: Value = create(&http, &base).await.json().await.unwrap();
    let done: Value = create(&http, &base).await.json().await.unwrap();
    let path = |export: &Value| format!("{EXPORTS}/{}", export["export_id"].as_str().unwrap());
    control(&http, &base, "clock", json!({"advance_seconds": 3600})).await;

    let (_, failed) = get(&http, &base, &path(&failing)).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["error_message"],
        "The storage is down; create a new export."
    );
    assert!(
        failed["download_url"].is_null() && failed["expires_at"].is_null(),
        "{failed}"
    );
    let (status, refused) = get(&http, &base, &format!("{}/download", path(&failing))).await;
    assert_eq!(status, 409, "{refused}");
    let (_, finished) = get(&http, &base, &path(&done)).await;
    assert_eq!(
        finished["status"], "done",
        "only the next export fails: {finished}"
    );

    control(&http, &base, "clock", json!({"advance_seconds": 24 * 3600})).await;
    let (_, expired) = get(&http, &base, &path(&done)).await;
    assert_eq!(expired["status"], "expired", "{expired}");
    assert!(expired["download_url"].is_null(), "{expired}");
    let (status, gone) = get(&http, &base, &format!("{}/download", path(&done))).await;
    assert_eq!(status, 410, "{gone}");
    assert_eq!(gone["error"]["code"], "export_expired");
    mock.shutdown().await;
}

#[tokio::test]
async fn deliveries_to_an_endpoint_can_be_made_to_fail() {
    let (mock, base) = start(true).await;
    let http = reqwest::Client::new();
    let endpoint: Value = http
        .post(format!("{base}/api/v1/webhooks/endpoints"))
        .bearer_auth("exk_frontend")
        .json(&json!({"url": "http://127.0.0.1:9/hooks", "event_types": ["export.done"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint_id = endpoint["endpoint_id"].as_str().unwrap().to_string();
    let (status, _) = control(
        &http,
        &base,
        "failing-deliveries",
        json!({"endpoint_id": endpoint_id}),
    )
    .await;
    assert_eq!(status, 204);
    create(&http, &base).await;
    control(&http, &base, "clock", json!({"advance_seconds": 3600})).await;
    let deliveries = format!("/api/v1/webhooks/endpoints/{endpoint_id}/deliveries");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let delivery = loop {
        let (_, list) = get(&http, &base, &deliveries).await;
        if let Some(first) = list["items"].as_array().and_then(|items| items.first()).cloned() {
            if first["attempts"].as_u64() >= Some(1) {
                break first;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempt: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(delivery["status"], "pending", "retried later: {delivery}");
    assert!(
        delivery["last_error"].as_str().unwrap().contains("sandbox"),
        "{delivery}"
    );
    let (status, refused) = control(
        &http,
        &base,
        "failing-deliveries",
        json!({"endpoint_id": "7d1f0c2e-0000-4000-8000-000000000000"}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["details"][0]["field"], "endpoint_id");
    mock.shutdown().await;
}
