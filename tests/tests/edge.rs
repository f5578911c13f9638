//! What the edge adds in front of dropshot: request ids, router errors in the envelope, CORS,
//! and the health endpoints.

use exports_tests::TestEnv;
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
