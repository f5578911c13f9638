//! Bad input and bad credentials: every one gets a 4xx in the error envelope, nothing is
//! written, and every response still conforms to the spec.

use exports_client::types::{CreateUserExport, ExportFormat};
use exports_server::db::keys::{SCOPE_READ, SCOPE_WEBHOOKS, SCOPE_WRITE};
use exports_tests::{error_of, TestEnv};
use serde_json::{json, Value};

const CREATE: &str = "/api/v1/exports/users";

async fn send(env: &TestEnv, key: &str, body: &str) -> anyhow::Result<(u16, Value)> {
    let response = env
        .raw()
        .post(env.url(CREATE))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    let request_id = response.headers()["x-request-id"].to_str()?.to_string();
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["request_id"], request_id.as_str(), "{body}");
    Ok((status, body))
}

fn fields(body: &Value) -> Vec<&str> {
    let mut fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    fields.sort();
    fields
}

#[tokio::test]
async fn invalid_format_and_filters_name_the_fields_and_allowed_values() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let user = env.writer().await?;
    let (status, body) = send(
        &env,
        &user.key,
        r#"{"format":"pdf","filters":{"status":"banned","created_after":"2024-02-30"}}"#,
    )
    .await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(
        fields(&body),
        ["filters.created_after", "filters.status", "format"]
    );
    let details = body["error"]["details"].as_array().unwrap();
    let format = details.iter().find(|d| d["field"] == "format").unwrap();
    assert_eq!(format["allowed"], json!(["csv", "xlsx", "jsonl"]));
    let status_detail = details.iter().find(|d| d["field"] == "filters.status").unwrap();
    assert_eq!(status_detail["allowed"], json!(["active", "inactive"]));
    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 0);
    assert!(env.queued_jobs().await?.is_empty());
    env.finish().await
}

#[tokio::test]
async fn malformed_bodies_are_400s_and_write_nothing() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let user = env.writer().await?;
    let cases: &[(&str, &[&str])] = &[
        (r#"{"format":"#, &["body"]),
        ("not json at all", &["body"]),
        ("", &["body"]),
        ("[]", &["body"]),
        ("null", &["body"]),
        (r#"{}"#, &["format"]),
        (r#"{"format":null}"#, &["format"]),
        (r#"{"format":42}"#, &["format"]),
        (r#"{"format":["csv"]}"#, &["format"]),
        (r#"{"format":"CSV"}"#, &["format"]),
        (r#"{"format":"csv","filters":[]}"#, &["filters"]),
        (
            r#"{"format":"csv","filters":{"created_after":"yesterday"}}"#,
            &["filters.created_after"],
        ),
        (
            r#"{"format":"csv","filters":{"created_after":"2024-01-01T00:00:00Z"}}"#,
            &["filters.created_after"],
        ),
        (
            r#"{"format":"csv","filters":{"created_after":20240101}}"#,
            &["filters.created_after"],
        ),
        (
            r#"{"format":"csv","filters":{"status":true}}"#,
            &["filters.status"],
        ),
        (
            r#"{"format":"csv","filters":{"since":"2024-01-01"}}"#,
            &["filters.since"],
        ),
        (r#"{"format":"csv","owner":"someone-else"}"#, &["owner"]),
        // The file's options (1.9).
        (r#"{"format":"csv","columns":"email"}"#, &["columns"]),
        (r#"{"format":"csv","columns":[]}"#, &["columns"]),
        (r#"{"format":"csv","columns":["email","email"]}"#, &["columns"]),
        (r#"{"format":"csv","columns":["email","phone"]}"#, &["columns.1"]),
        (r#"{"format":"csv","columns":[1]}"#, &["columns.0"]),
        (r#"{"format":"csv","columns":null}"#, &["columns"]),
        (r#"{"format":"xlsx","compression":"gzip"}"#, &["compression"]),
        (r#"{"format":"csv","compression":"zip"}"#, &["compression"]),
        (r#"{"format":"csv","compression":true}"#, &["compression"]),
        (r#"{"format":"ndjson","compression":"gzip"}"#, &["format"]),
    ];
    let columns = json!(["id", "email", "name", "status", "created_at"]);
    for (body, expected) in cases {
        let (status, response) = send(&env, &user.key, body).await?;
        assert_eq!(status, 400, "{body}: {response}");
        assert_eq!(response["error"]["code"], "invalid_request", "{body}");
        assert_eq!(fields(&response), *expected, "{body}: {response}");
        let detail = &response["error"]["details"][0];
        if expected[0].starts_with("columns") {
            assert_eq!(detail["allowed"], columns, "{body}: {response}");
        }
        if body.contains(r#""xlsx","compression":"gzip""#) {
            assert_eq!(detail["allowed"], json!(["none"]), "{response}");
            assert!(
                detail["issue"].as_str().unwrap().contains("already compressed"),
                "{response}"
            );
        }
    }
    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 0);
    assert!(env.queued_jobs().await?.is_empty());
    env.finish().await
}

#[tokio::test]
async fn huge_bodies_get_413() -> anyhow::Result<()> {
    let env = TestEnv::start_with(|s| s.max_body_bytes = 1024).await?;
    let user = env.writer().await?;
    let huge = format!(r#"{{"format":"csv","padding":"{}"}}"#, "x".repeat(10_000));
    let (status, body) = send(&env, &user.key, &huge).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    // Without a Content-Length the edge cannot tell in advance; dropshot's limit answers 413 too.
    let chunks =
        futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1000]))));
    let response = env
        .raw()
        .post(env.url(CREATE))
        .bearer_auth(&user.key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 413);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 0);
    env.finish().await
}

#[tokio::test]
async fn invalid_ids_in_paths_are_400s() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let user = env.writer().await?;
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/exports/users/not-a-uuid"),
        (reqwest::Method::GET, "/api/v1/exports/users/1234/download"),
        (
            reqwest::Method::POST,
            "/api/v1/exports/users/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz/cancel",
        ),
    ] {
        let response = env
            .raw()
            .request(method, env.url(path))
            .bearer_auth(&user.key)
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), 400, "{path}");
        let body: Value = response.json().await?;
        assert_eq!(fields(&body), ["export_id"], "{path}");
    }
    for (query, field) in [
        ("page_token=garbage", "page_token"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=many", "limit"),
    ] {
        let url = env.url(&format!("/api/v1/exports/users?{query}"));
        let response = env.raw().get(url).bearer_auth(&user.key).send().await?;
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let body: Value = response.json().await?;
        assert_eq!(fields(&body), [field], "{query}: {body}");
    }
    env.finish().await
}

#[tokio::test]
async fn missing_garbage_and_revoked_keys_get_401() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let user = env.writer().await?;
    let body = r#"{"format":"csv"}"#;
    let attempts: Vec<Option<String>> = vec![
        None,
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some("Basic dXNlcjpwYXNz".into()),
        Some(format!("Token {}", user.key)),
        Some("Bearer exk_not-a-real-key".into()),
        Some("Bearer some-other-service-token".into()),
        Some(format!("Bearer {}x", user.key)),
    ];
    for authorization in attempts {
        let mut request = env
            .raw()
            .post(env.url(CREATE))
            .header("content-type", "application/json")
            .body(body);
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await?;
        assert_eq!(response.status().as_u16(), 401, "{authorization:?}");
        let envelope: Value = response.json().await?;
        assert_eq!(envelope["error"]["code"], "unauthorized");
        assert_eq!(fields(&envelope), ["Authorization"]);
    }

    // A revoked key stops working at once.
    let client = env.client(&user);
    client.list_exports(None, None).await?;
    let key_id: uuid::Uuid = env
        .pool
        .get()
        .await?
        .query_one("SELECT id FROM api_keys WHERE user_id = $1", &[&user.id])
        .await?
        .get(0);
    let pool_client = env.pool.get().await?;
    assert!(exports_server::db::keys::revoke_key(&pool_client, key_id).await?);
    assert_eq!(error_of(client.list_exports(None, None).await).0, 401);
    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 0);
    env.finish().await
}

#[tokio::test]
async fn the_key_is_checked_before_the_request_so_strangers_learn_nothing_from_a_400() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let writer = env.writer().await?;
    let stranger = "exk_0000000000000000000000000000000000000000000";
    for key in ["", stranger] {
        let (status, body) = send(&env, key, "{not json").await?;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{body}"
        );
        let (status, _) = send(&env, key, r#"{"format": "pdf"}"#).await?;
        assert_eq!(status, 401);
        let response = env
            .raw()
            .get(env.url("/api/v1/exports/users?limit=0&page_token=garbage"))
            .bearer_auth(key)
            .send()
            .await?;
        assert_eq!(response.status(), 401);
    }
    // With a valid key, the same requests get their 400s.
    let (status, body) = send(&env, &writer.key, "{not json").await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let response = env
        .raw()
        .get(env.url("/api/v1/exports/users?limit=0"))
        .bearer_auth(&writer.key)
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    env.finish().await
}

#[tokio::test]
async fn keys_without_the_scope_get_403() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let reader = env.client(&env.user(&[SCOPE_READ]).await?);
    let writer_only = env.writer().await?;
    let writer_client = env.client(&env.user(&[SCOPE_WRITE]).await?);

    let request = CreateUserExport {
        format: ExportFormat::Csv,
        filters: None,
        columns: None,
        compression: None,
    };
    let (status, body, _) = error_of(reader.create_user_export(None, &request).await);
    assert_eq!((status, body.error.code.as_str()), (403, "forbidden"));
    assert!(body.error.message.contains(SCOPE_WRITE));
    let id = env
        .client(&writer_only)
        .create_user_export(None, &request)
        .await?
        .into_inner()
        .export_id;
    assert_eq!(error_of(reader.cancel_export(&id).await).0, 403);
    assert_eq!(error_of(writer_client.get_export(&id).await).0, 403);
    assert_eq!(error_of(writer_client.list_exports(None, None).await).0, 403);
    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 1);
    env.finish().await
}

/// The spec's `x-required-scope` (what the mock enforces) is the scope the server checks: a
/// key with every scope but that one gets 403 on each operation that names one.
#[tokio::test]
async fn every_operation_checks_the_scope_the_spec_names() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let spec = exports_spec::Spec::bundled();
    let mut checked = 0;
    for operation in spec.operations() {
        let Some(required) = operation
            .definition
            .get("x-required-scope")
            .and_then(|s| s.as_str())
        else {
            continue;
        };
        let others: Vec<&str> = [SCOPE_READ, SCOPE_WRITE, SCOPE_WEBHOOKS]
            .into_iter()
            .filter(|s| *s != required)
            .collect();
        let key = env.user(&others).await?.key;
        let path = operation
            .path
            .replace("{export_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{endpoint_id}", &uuid::Uuid::new_v4().to_string());
        let response = env
            .raw()
            .request(operation.method.parse()?, env.url(&path))
            .bearer_auth(&key)
            .json(&serde_json::json!({"format": "csv"}))
            .send()
            .await?;
        assert_eq!(response.status(), 403, "{} without {required}", operation.id);
        let body: serde_json::Value = response.json().await?;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(required),
            "{body}"
        );
        checked += 1;
    }
    assert_eq!(checked, 10, "every /api/v1 operation names its scope");
    env.finish().await
}

#[tokio::test]
async fn slow_requests_get_504() -> anyhow::Result<()> {
    // A zero time limit: any operation that waits on PostgreSQL misses it.
    let env = TestEnv::start_with(|s| s.request_timeout = std::time::Duration::ZERO).await?;
    let user = env.writer().await?;
    let (status, body, _) = error_of(env.client(&user).list_exports(None, None).await);
    assert_eq!((status, body.error.code.as_str()), (504, "timeout"));
    env.finish().await
}
