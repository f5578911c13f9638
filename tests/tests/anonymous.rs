//! Requests without a valid key cannot make the server work for them: a rejected key is
//! remembered, an address that keeps failing gets `429` from the edge, and the public
//! endpoints (`/metrics`, `/health/ready`) do not queue on the database pool.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use exports_client::types::{CreateUserExport, ExportFormat};
use exports_tests::{error_of, raw_request, TestEnv};
use serde_json::Value;

/// A generous upper bound for anything the server should do promptly.
const PROMPTLY: Duration = Duration::from_secs(30);

async fn api_key_lookups(env: &TestEnv) -> anyhow::Result<u64> {
    let text = env.raw().get(env.url("/metrics")).send().await?.text().await?;
    let line = text
        .lines()
        .find(|line| line.starts_with("exports_api_key_lookups_total "))
        .ok_or_else(|| anyhow::anyhow!("no exports_api_key_lookups_total in {text}"))?;
    Ok(line.rsplit(' ').next().unwrap_or_default().parse()?)
}

fn unknown_key(n: usize) -> String {
    format!("exk_{n:043}")
}

#[tokio::test]
async fn a_rejected_key_is_not_looked_up_again() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let client = env.client_with_key(&unknown_key(1));
    for _ in 0..5 {
        let (status, body, _) = error_of(client.list_exports(None, None).await);
        assert_eq!((status, body.error.code.as_str()), (401, "unauthorized"));
    }
    assert_eq!(api_key_lookups(&env).await?, 1);
    env.finish().await
}

#[tokio::test]
async fn an_address_that_keeps_failing_authentication_gets_429_and_others_are_answered() -> anyhow::Result<()>
{
    let limit = 5;
    let env = TestEnv::start_with(|settings| settings.max_failed_authentications_per_minute = limit).await?;
    let writer = env.writer().await?;

    for n in 0..limit as usize {
        let (status, _, _) = error_of(
            env.client_with_key(&unknown_key(n))
                .list_exports(None, None)
                .await,
        );
        assert_eq!(status, 401);
    }
    // Past the limit: every API request from this address, a good key's too, is refused at
    // the edge, with a documented answer, and no key is looked up any more.
    for n in limit as usize..limit as usize + 20 {
        let response = env
            .raw()
            .get(env.url("/api/v1/exports/users"))
            .bearer_auth(unknown_key(n))
            .send()
            .await?;
        assert_eq!(response.status(), 429);
        let retry_after: u64 = response.headers()["retry-after"].to_str()?.parse()?;
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["code"], "too_many_failed_authentications");
        assert_eq!(body["error"]["retry_after_seconds"], retry_after);
    }
    let (status, body, headers) = error_of(env.client(&writer).list_exports(None, None).await);
    assert_eq!(
        (status, body.error.code.as_str()),
        (429, "too_many_failed_authentications")
    );
    assert!(headers.contains_key("retry-after"));
    assert_eq!(api_key_lookups(&env).await?, u64::from(limit));
    // Public endpoints stay open to it.
    let response = env.raw().get(env.url("/health/live")).send().await?;
    assert_eq!(response.status(), 200);

    // Another address is answered as usual (straight to the server: the tests' proxy would
    // make every request come from 127.0.0.1).
    let elsewhere = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()?;
    let response = elsewhere
        .get(format!("http://{}/api/v1/exports/users", env.server_addr))
        .bearer_auth(&writer.key)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    env.finish().await
}

/// Spellings of `/api/v1/exports/users` that dropshot's router takes (it drops empty segments
/// and percent-decodes) but a check of the raw path does not: each once let a good key past
/// the limit on failed authentications, and a bad one through to PostgreSQL.
const OTHER_SPELLINGS: &[&str] = &[
    "//api/v1/exports/users",
    "/%61pi/v1/exports/users",
    "/api/v1/./exports/users",
    "/api%2Fv1/exports/users",
    "/api/v1/exports%2fusers",
    "/api/v1/exports/users/",
];

#[tokio::test]
async fn only_the_routed_spelling_of_a_path_is_answered_so_the_failure_limit_has_no_way_round(
) -> anyhow::Result<()> {
    let limit = 5;
    let env = TestEnv::start_with(|settings| settings.max_failed_authentications_per_minute = limit).await?;
    let writer = env.writer().await?;
    let get = |path: &str, key: &str| format!("GET {path} HTTP/1.1\r\nAuthorization: Bearer {key}");
    let expect_refused = |path: &str, (status, body): (u16, String)| -> anyhow::Result<()> {
        assert_eq!(status, 400, "{path}: {body}");
        let body: Value = serde_json::from_str(&body)?;
        assert_eq!(body["error"]["code"], "invalid_request", "{path}: {body}");
        assert_eq!(body["error"]["details"][0]["field"], "path", "{path}: {body}");
        Ok(())
    };

    // A thousand wrong keys spread over the other spellings: every one is refused at the edge,
    // none is looked up, and the address is not limited by them.
    for n in 0..1000 {
        let path = OTHER_SPELLINGS[n % OTHER_SPELLINGS.len()];
        expect_refused(
            path,
            raw_request(env.server_addr, &get(path, &unknown_key(n))).await?,
        )?;
    }
    assert_eq!(api_key_lookups(&env).await?, 0);
    let (status, body) = raw_request(env.server_addr, &get("/api/v1/exports/users", &writer.key)).await?;
    assert_eq!(status, 200, "{body}");
    let looked_up = api_key_lookups(&env).await?;

    // Past the limit on the routed spelling, a good key gets 429 there and 400 elsewhere,
    // never 200.
    for n in 0..limit as usize {
        let path = "/api/v1/exports/users";
        let (status, body) = raw_request(env.server_addr, &get(path, &unknown_key(n))).await?;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = raw_request(env.server_addr, &get("/api/v1/exports/users", &writer.key)).await?;
    assert_eq!(status, 429, "{body}");
    for path in OTHER_SPELLINGS {
        expect_refused(path, raw_request(env.server_addr, &get(path, &writer.key)).await?)?;
    }
    assert_eq!(api_key_lookups(&env).await? - looked_up, u64::from(limit));
    env.finish().await
}

#[tokio::test]
async fn metrics_and_readiness_answer_while_every_database_connection_is_taken() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    // A first readiness check, while the pool has room.
    let response = env.raw().get(env.url("/health/ready")).send().await?;
    assert_eq!(response.status(), 200);

    let mut taken = Vec::new();
    while let Ok(Ok(connection)) = tokio::time::timeout(Duration::from_millis(50), env.pool.get()).await {
        taken.push(connection);
    }
    assert_eq!(env.pool.status().available, 0);
    assert!(!taken.is_empty());

    let scrape = tokio::time::timeout(PROMPTLY, env.raw().get(env.url("/metrics")).send()).await??;
    assert_eq!(scrape.status(), 200);
    assert!(scrape.text().await?.contains("exports_queue_depth 0"));
    drop(taken);
    env.finish().await
}

#[tokio::test]
async fn the_queue_depth_is_counted_apart_from_scrapes() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let writer = env.writer().await?;
    let request = CreateUserExport {
        format: ExportFormat::Csv,
        filters: None,
        columns: None,
        compression: None,
    };
    env.client(&writer).create_user_export(None, &request).await?;
    env.metrics.refresh_queue_depth(&env.pool).await?;
    let text = env.raw().get(env.url("/metrics")).send().await?.text().await?;
    assert!(text.contains("exports_queue_depth 1"), "{text}");
    env.finish().await
}

#[tokio::test]
async fn metrics_can_be_served_on_an_address_of_their_own() -> anyhow::Result<()> {
    let env = TestEnv::start_with(|settings| {
        settings.metrics_listen = Some("127.0.0.1:0".parse().expect("an address"));
    })
    .await?;
    let error: Value = env.raw().get(env.url("/metrics")).send().await?.json().await?;
    assert_eq!(error["error"]["code"], "not_found");
    let addr = env.metrics_addr().expect("metrics are served apart");
    let response = reqwest::get(format!("http://{addr}/metrics")).await?;
    assert_eq!(response.status(), 200);
    assert!(response.text().await?.contains("exports_api_key_lookups_total"));
    env.finish().await
}
