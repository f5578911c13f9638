//! `Idempotency-Key` on createUserExport (issue 11, item 3), against the real server,
//! PostgreSQL and Redis: a replay gets the first answer and writes nothing, one key under
//! concurrency makes one export, a different request with the key gets 422, keys belong to
//! their user, only successful creates are remembered, malformed keys get 400, and keys
//! older than a day are forgotten.

use std::time::Duration;

use exports_client::types::{
    CreateUserExport, CreateUserExportIdempotencyKey, ExportFormat, UserExportFilters, UserStatus,
};
use exports_tests::{error_of, quick_worker, Setup, TestEnv};
use serde_json::{json, Value};

fn csv(status: Option<UserStatus>) -> CreateUserExport {
    CreateUserExport {
        format: ExportFormat::Csv,
        filters: status.map(|status| UserExportFilters {
            created_after: None,
            status: Some(status),
        }),
        columns: None,
        compression: None,
    }
}

fn key(text: &str) -> CreateUserExportIdempotencyKey {
    text.parse().expect("a valid key")
}

/// A create sent as raw JSON, for bodies and headers the generated client does not send.
async fn raw_create(
    env: &TestEnv,
    api_key: &str,
    idempotency_keys: &[&[u8]],
    body: &str,
) -> anyhow::Result<(u16, http::HeaderMap, Value)> {
    let mut request = env
        .raw()
        .post(env.url("/api/v1/exports/users"))
        .bearer_auth(api_key)
        .header("content-type", "application/json")
        .body(body.to_string());
    for value in idempotency_keys {
        request = request.header("Idempotency-Key", http::HeaderValue::from_bytes(value)?);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Ok((status, headers, response.json().await?))
}

#[tokio::test]
async fn a_replay_gets_the_first_answer_and_writes_nothing() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let user = env.writer().await?;
    let body = r#"{"format": "csv", "filters": {"status": "active", "created_after": "2020-01-01"}}"#;
    let (status, headers, first) = raw_create(&env, &user.key, &[b"order-42"], body).await?;
    assert_eq!(status, 202, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());

    // The same request, its members in another order and spaced differently.
    let reordered = r#"{ "filters":{"created_after":"2020-01-01","status":"active"},"format":"csv" }"#;
    let (status, headers, replayed) = raw_create(&env, &user.key, &[b"order-42"], reordered).await?;
    assert_eq!(status, 202, "{replayed}");
    assert_eq!(replayed, first, "the first answer, body and all");
    assert_eq!(headers["idempotent-replayed"], "true");
    // Through the generated client too.
    let client = env.client(&user);
    let request = CreateUserExport {
        format: ExportFormat::Csv,
        filters: Some(UserExportFilters {
            created_after: Some("2020-01-01".parse()?),
            status: Some(UserStatus::Active),
        }),
        columns: None,
        compression: None,
    };
    let again = client
        .create_user_export(Some(&key("order-42")), &request)
        .await?;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.into_inner().export_id.to_string(),
        first["export_id"].as_str().unwrap()
    );

    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 1);
    assert_eq!(env.queued_jobs().await?.len(), 1);
    env.finish().await
}

#[tokio::test]
async fn one_key_under_concurrency_makes_one_export() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let client = env.client(&env.writer().await?);
    let (request, once) = (csv(None), key("one-export-please"));
    let results =
        futures::future::join_all((0..50).map(|_| client.create_user_export(Some(&once), &request))).await;
    let mut export_ids = std::collections::HashSet::new();
    let mut in_use = 0;
    for result in results {
        match result {
            Ok(accepted) => {
                export_ids.insert(accepted.into_inner().export_id);
            }
            Err(error) => {
                let (status, body, _) = error_of::<()>(Err(error));
                assert_eq!(
                    (status, body.error.code.as_str()),
                    (409, "idempotency_key_in_use")
                );
                in_use += 1;
            }
        }
    }
    assert_eq!(
        export_ids.len(),
        1,
        "every 202 names the one export ({in_use} were 409)"
    );
    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 1);
    assert_eq!(env.queued_jobs().await?.len(), 1);
    env.finish().await
}

#[tokio::test]
async fn a_different_request_with_the_same_key_gets_422() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let client = env.client(&env.writer().await?);
    let reused = key("report-2025-06");
    client.create_user_export(Some(&reused), &csv(None)).await?;
    let (status, body, _) = error_of(
        client
            .create_user_export(Some(&reused), &csv(Some(UserStatus::Inactive)))
            .await,
    );
    assert_eq!(
        (status, body.error.code.as_str()),
        (422, "idempotency_key_reused")
    );
    let xlsx = CreateUserExport {
        format: ExportFormat::Xlsx,
        filters: None,
        columns: None,
        compression: None,
    };
    assert_eq!(
        error_of(client.create_user_export(Some(&reused), &xlsx).await).0,
        422
    );
    // Leaving the filters out and sending `{}` are the same request.
    let empty_filters = CreateUserExport {
        format: ExportFormat::Csv,
        filters: Some(UserExportFilters {
            created_after: None,
            status: None,
        }),
        columns: None,
        compression: None,
    };
    let replay = client.create_user_export(Some(&reused), &empty_filters).await?;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 1);
    assert_eq!(env.queued_jobs().await?.len(), 1);
    env.finish().await
}

#[tokio::test]
async fn keys_belong_to_their_user() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let (alice, bob) = (env.client(&env.writer().await?), env.client(&env.writer().await?));
    let shared = key("nightly");
    let for_alice = alice.create_user_export(Some(&shared), &csv(None)).await?;
    let for_bob = bob
        .create_user_export(Some(&shared), &csv(Some(UserStatus::Active)))
        .await?;
    assert!(for_bob.headers().get("idempotent-replayed").is_none());
    assert_ne!(for_alice.into_inner().export_id, for_bob.into_inner().export_id);
    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 2);
    env.finish().await
}

#[tokio::test]
async fn a_replay_at_the_pending_limit_still_gets_202() -> anyhow::Result<()> {
    let env = TestEnv::start_with(|s| s.max_pending_per_user = 1).await?;
    let client = env.client(&env.writer().await?);
    let first = client
        .create_user_export(Some(&key("first")), &csv(None))
        .await?
        .into_inner();
    assert_eq!(error_of(client.create_user_export(None, &csv(None)).await).0, 429);
    let replay = client.create_user_export(Some(&key("first")), &csv(None)).await?;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.into_inner().export_id, first.export_id);
    env.finish().await
}

#[tokio::test]
async fn only_successful_creates_are_remembered() -> anyhow::Result<()> {
    let env = TestEnv::start_with(|s| s.max_pending_per_user = 1).await?;
    let user = env.writer().await?;
    let client = env.client(&user);
    let blocker = client.create_user_export(None, &csv(None)).await?.into_inner();
    // Refused at the limit: the key is not remembered...
    let retried = key("after-the-limit");
    let (status, body, _) = error_of(
        client
            .create_user_export(Some(&retried), &csv(Some(UserStatus::Active)))
            .await,
    );
    assert_eq!(
        (status, body.error.code.as_str()),
        (429, "too_many_pending_exports")
    );
    // ...nor after a 400 (an unknown format).
    let (status, _, invalid) =
        raw_create(&env, &user.key, &[b"after-the-limit"], r#"{"format": "pdf"}"#).await?;
    assert_eq!(status, 400, "{invalid}");
    assert_eq!(env.count("SELECT count(*) FROM idempotency_keys").await?, 0);
    // So once there is room, the key creates an export, whatever the earlier requests were.
    client.cancel_export(&blocker.export_id).await?;
    let created = client.create_user_export(Some(&retried), &csv(None)).await?;
    assert!(created.headers().get("idempotent-replayed").is_none());
    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 2);
    env.finish().await
}

#[tokio::test]
async fn malformed_keys_get_400_naming_the_header_and_write_nothing() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let user = env.writer().await?;
    let too_long = "k".repeat(256);
    let body = r#"{"format": "csv"}"#;
    for keys in [
        vec![&b""[..]],
        vec![too_long.as_bytes()],
        vec!["clé".as_bytes()],
        vec![&b"a\tb"[..]],
        vec![&b"one"[..], &b"two"[..]],
    ] {
        let (status, _, answer) = raw_create(&env, &user.key, &keys, body).await?;
        assert_eq!(status, 400, "{keys:?}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request");
        assert_eq!(
            answer["error"]["details"][0]["field"], "Idempotency-Key",
            "{answer}"
        );
    }
    // With a bad body too, every problem is reported at once.
    let (status, _, answer) = raw_create(&env, &user.key, &[b""], r#"{"format": "pdf"}"#).await?;
    assert_eq!(status, 400);
    let fields: Vec<&str> = answer["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|detail| detail["field"].as_str())
        .collect();
    assert_eq!(fields, ["Idempotency-Key", "format"], "{answer}");
    // Without a valid API key, 401 comes first.
    let anonymous = env
        .raw()
        .post(env.url("/api/v1/exports/users"))
        .header("Idempotency-Key", "")
        .json(&json!({"format": "csv"}))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 0);
    assert_eq!(env.count("SELECT count(*) FROM idempotency_keys").await?, 0);
    env.finish().await
}

#[tokio::test]
async fn keys_older_than_a_day_are_forgotten() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup {
        worker: Some(quick_worker()),
        ..Default::default()
    })
    .await?;
    let client = env.client(&env.writer().await?);
    client
        .create_user_export(Some(&key("yesterday")), &csv(None))
        .await?;
    client.create_user_export(Some(&key("today")), &csv(None)).await?;
    let age = "WITH aged AS (UPDATE idempotency_keys SET created_at = now() - interval '25 hours'
               WHERE key = 'yesterday' RETURNING 1) SELECT count(*) FROM aged";
    assert_eq!(env.count(age).await?, 1);
    // A key past its day is handled afresh, even before the sweeper deletes it.
    let fresh = client
        .create_user_export(Some(&key("yesterday")), &csv(Some(UserStatus::Inactive)))
        .await?;
    assert!(fresh.headers().get("idempotent-replayed").is_none());
    assert_eq!(env.count(age).await?, 1);
    // The sweeper (every second here) deletes it; a generous bound, not what is measured.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while env
        .count("SELECT count(*) FROM idempotency_keys WHERE key = 'yesterday'")
        .await?
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old key was not purged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        env.count("SELECT count(*) FROM idempotency_keys WHERE key = 'today'")
            .await?,
        1
    );
    env.finish().await
}
