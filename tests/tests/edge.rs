//! What the edge adds in front of dropshot: request ids, router errors in the envelope, CORS,
//! and the health endpoints.

use exports_tests::{raw_request, TestEnv};
use serde_json::Value;

#[tokio::test]
async fn request_ids_are_honoured_or_generated() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let response = env
        .raw()
        .get(env.url("/health/live"))
        .header("x-request-id", "trace-42.a_b")
        .send()
        .await?;
    assert_eq!(response.headers()["x-request-id"], "trace-42.a_b");

    // Unsafe ids are replaced; errors carry the same id as the header.
    let response = env
        .raw()
        .get(env.url("/api/v1/exports/users"))
        .header("x-request-id", "<script>")
        .send()
        .await?;
    let id = response.headers()["x-request-id"].to_str()?.to_string();
    assert_ne!(id, "<script>");
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["request_id"], id.as_str());
    env.finish().await
}

#[tokio::test]
async fn only_path_targets_are_forwarded() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    // Asterisk-form once reached port 80 of the host; absolute- and authority-form name
    // another host. None of them leaves the process: each gets the envelope's 400.
    for head in [
        "GET * HTTP/1.1",
        "OPTIONS * HTTP/1.1",
        "GET http://127.0.0.1:1/health/live HTTP/1.1",
        "CONNECT 127.0.0.1:1 HTTP/1.1",
    ] {
        let (status, body) = raw_request(env.server_addr, head).await?;
        assert_eq!(status, 400, "{head}: {body}");
        let body: Value = serde_json::from_str(&body)?;
        assert_eq!(body["error"]["code"], "invalid_request", "{head}: {body}");
    }
    let (status, _) = raw_request(env.server_addr, "GET /health/live HTTP/1.1").await?;
    assert_eq!(status, 200);
    env.finish().await
}

#[tokio::test]
async fn oversized_heads_get_the_envelope_and_the_server_keeps_answering() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let fields = |count: usize| -> String { (0..count).map(|i| format!("\r\nX-Field-{i}: {i}")).collect() };
    let list = "GET /api/v1/exports/users";
    // The edge's own limits, then hyper's (fields, target) and a head that is not HTTP/1.1,
    // which hyper answers before the edge sees anything: the listener puts that answer in the
    // envelope and closes the connection. The server keeps answering everyone else.
    let spec = exports_spec::Spec::bundled();
    let envelope = serde_json::json!({"$ref": "#/components/schemas/ErrorResponse"});
    for (head, status, code) in [
        (
            format!("{list} HTTP/1.1{}", fields(101)),
            431,
            "request_header_fields_too_large",
        ),
        (
            format!("{list} HTTP/1.1\r\nX-Big: {}", "a".repeat(17 * 1024)),
            431,
            "request_header_fields_too_large",
        ),
        (
            format!("{list}?page_token={} HTTP/1.1", "a".repeat(9 * 1024)),
            414,
            "uri_too_long",
        ),
        (
            format!("{list} HTTP/1.1{}", fields(300)),
            431,
            "request_header_fields_too_large",
        ),
        (
            format!("{list}?page_token={} HTTP/1.1", "a".repeat(70 * 1024)),
            414,
            "uri_too_long",
        ),
        ("GET /health/live HTTP/9".to_string(), 400, "invalid_request"),
    ] {
        let (answered, body) = raw_request(env.server_addr, &head).await?;
        assert_eq!(answered, status, "{body}");
        let body: Value = serde_json::from_str(&body)?;
        assert_eq!(body["error"]["code"], code, "{body}");
        if let Err(problems) = spec.validate(&envelope, &body) {
            anyhow::bail!("{body} breaks the spec: {problems:?}");
        }
        assert!(!body["error"]["request_id"]
            .as_str()
            .unwrap_or_default()
            .is_empty());
    }
    // Within the limits (with Host and Connection, 96 fields), the request goes on, to the
    // key check.
    let (answered, _) = raw_request(env.server_addr, &format!("{list} HTTP/1.1{}", fields(94))).await?;
    assert_eq!(answered, 401);
    let (answered, _) = raw_request(env.server_addr, "GET /health/live HTTP/1.1").await?;
    assert_eq!(answered, 200);
    env.finish().await
}

#[tokio::test]
async fn unknown_paths_and_methods_get_the_envelope() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let response = env.raw().get(env.url("/api/v1/nothing-here")).send().await?;
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "not_found");
    assert!(!body["error"]["request_id"].as_str().unwrap().is_empty());
    assert!(body["error"]["details"].is_array());

    let response = env.raw().delete(env.url("/api/v1/exports/users")).send().await?;
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "method_not_allowed");
    env.finish().await
}

#[tokio::test]
async fn cors_preflight_allows_a_browser_with_a_bearer_token() -> anyhow::Result<()> {
    let env = TestEnv::start_with(|s| s.cors_allowed_origins = vec!["http://localhost:5173".into()]).await?;
    let preflight = env
        .raw()
        .request(reqwest::Method::OPTIONS, env.url("/api/v1/exports/users"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await?;
    assert_eq!(preflight.status().as_u16(), 204);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "http://localhost:5173");
    assert!(headers["access-control-allow-methods"].to_str()?.contains("POST"));
    assert!(headers["access-control-allow-headers"]
        .to_str()?
        .contains("authorization"));
    // A browser may send a key to retry a create safely, and read whether it was a replay.
    assert_eq!(
        headers["access-control-allow-headers"],
        exports_spec::cors::ALLOW_HEADERS,
        "the mock's rules, word for word"
    );

    let actual = env
        .raw()
        .get(env.url("/health/live"))
        .header("origin", "http://localhost:5173")
        .send()
        .await?;
    assert_eq!(
        actual.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    assert!(actual.headers()["access-control-expose-headers"]
        .to_str()?
        .contains("retry-after"));

    let stranger = env
        .raw()
        .request(reqwest::Method::OPTIONS, env.url("/api/v1/exports/users"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await?;
    assert!(stranger.headers().get("access-control-allow-origin").is_none());
    env.finish().await
}

#[tokio::test]
async fn health_endpoints_need_no_key() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let client = env.client_with_key("");
    assert_eq!(
        client.liveness().await?.into_inner().status,
        exports_client::types::HealthStatus::Ok
    );
    let ready = client.readiness().await?.into_inner();
    assert_eq!(
        ready.checks.postgres,
        exports_client::types::ReadinessChecksPostgres::Ok
    );
    assert!(env.validated_responses() >= 2);
    env.finish().await
}

#[tokio::test]
async fn an_unreachable_database_is_a_503_with_retry_after() -> anyhow::Result<()> {
    let env = TestEnv::start_with_unreachable_postgres().await?;
    let user_key = "exk_any-key-the-server-cannot-check";
    for response in [
        env.raw().get(env.url("/health/ready")).send().await?,
        env.raw()
            .post(env.url("/api/v1/exports/users"))
            .bearer_auth(user_key)
            .json(&serde_json::json!({"format": "csv"}))
            .send()
            .await?,
    ] {
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers()["retry-after"], "5");
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["code"], "service_unavailable");
        assert_eq!(body["error"]["details"][0]["field"], "postgres");
        assert_eq!(
            body["error"]["details"][0]["issue"], "unreachable",
            "no internal detail leaks"
        );
    }
    assert_eq!(env.validated_responses(), 2);
    env.finish().await
}

#[tokio::test]
async fn responses_are_neither_cached_nor_sniffed() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let writer = env.writer().await?;
    let with_key = env
        .raw()
        .get(env.url("/api/v1/exports/users"))
        .bearer_auth(&writer.key)
        .send()
        .await?;
    let without_key = env.raw().get(env.url("/api/v1/exports/users")).send().await?;
    let health = env.raw().get(env.url("/health/live")).send().await?;
    for (what, response) in [("list", &with_key), ("401", &without_key), ("health", &health)] {
        assert_eq!(response.headers()["cache-control"], "no-store", "{what}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff", "{what}");
    }
    env.finish().await
}

#[tokio::test]
async fn cors_allows_no_origin_by_default_and_any_origin_as_a_literal_star() -> anyhow::Result<()> {
    let cross_origin_get = |env: &TestEnv| {
        env.raw()
            .get(env.url("/health/live"))
            .header("origin", "https://app.example")
            .send()
    };
    let env = TestEnv::start().await?;
    let response = cross_origin_get(&env).await?;
    assert!(response.headers().get("access-control-allow-origin").is_none());
    env.finish().await?;

    let env = TestEnv::start_with(|s| s.cors_allowed_origins = vec!["*".into()]).await?;
    let response = cross_origin_get(&env).await?;
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(response
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    env.finish().await
}
