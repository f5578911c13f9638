//! Webhook deliveries (issue 13, items 2 to 4), against the real server, worker, PostgreSQL
//! and Redis, to real HTTP receivers in the test: a finished export is announced once, signed
//! so that the official Standard Webhooks library verifies it; a receiver that fails, or is
//! down, gets the event again with the same `webhook-id` until it takes it; a deleted endpoint
//! gets nothing; a rotated secret signs the next delivery; a flushed Redis loses nothing (the
//! outbox is PostgreSQL's); a name that resolves to loopback by delivery time is not reached.
//! And (issue 22) one user's slow endpoints do not delay another user's events; a proxy named
//! by the environment is not used.

use std::time::Duration;

use exports_client::types::{
    CreateUserExport, CreateWebhookEndpoint, ExportFormat, ExportStatus, WebhookDeliveryStatus,
    WebhookEventType,
};
use exports_tests::receiver::{verify, Receiver, Step};
use exports_tests::{create, quick_worker, wait_for_export, Setup, TestEnv, TestUser};

const FINISH: Duration = Duration::from_secs(60);
/// What a user needs to make exports and receive their events.
const SCOPES: &[&str] = &["exports:read", "exports:write", "webhooks:manage"];

/// The API and a worker, webhooks allowed to loopback (the receivers are the test's own).
async fn env() -> anyhow::Result<TestEnv> {
    let setup = Setup {
        worker: Some(quick_worker()),
        ..Setup::default()
    };
    TestEnv::start_setup_with(setup, |settings| settings.webhook_urls.allow_private = true).await
}

async fn register(env: &TestEnv, user: &TestUser, url: &str) -> anyhow::Result<(uuid::Uuid, String)> {
    let created = env
        .client(user)
        .create_webhook_endpoint(&CreateWebhookEndpoint {
            url: url.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
            event_types: vec![],
        })
        .await?
        .into_inner();
    Ok((created.endpoint_id, created.secret.to_string()))
}

fn every_user_as_csv() -> CreateUserExport {
    CreateUserExport {
        format: ExportFormat::Csv,
        filters: None,
        columns: None,
        compression: None,
    }
}

/// A finished export of the user's.
async fn finished_export(env: &TestEnv, user: &TestUser) -> anyhow::Result<uuid::Uuid> {
    let client = env.client(user);
    let id = create(&client, &every_user_as_csv()).await?;
    wait_for_export(&client, &id, FINISH, |e| e.status == ExportStatus::Done).await?;
    Ok(id)
}

async fn delivery_rows(env: &TestEnv) -> anyhow::Result<Vec<(uuid::Uuid, i32, bool)>> {
    let rows = env
        .pool
        .get()
        .await?
        .query(
            "SELECT endpoint_id, attempts, delivered_at IS NOT NULL FROM webhook_deliveries",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
}

/// Waits until every outbox entry is delivered (the worker writes it just after the answer).
async fn all_delivered(env: &TestEnv) -> anyhow::Result<Vec<(uuid::Uuid, i32, bool)>> {
    let deadline = tokio::time::Instant::now() + FINISH;
    loop {
        let rows = delivery_rows(env).await?;
        if rows.iter().all(|(_, _, delivered)| *delivered) || tokio::time::Instant::now() > deadline {
            return Ok(rows);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_finished_export_is_announced_once_and_the_official_library_verifies_it() -> anyhow::Result<()> {
    let env = env().await?;
    let user = env.user(SCOPES).await?;
    let mut receiver = Receiver::start(vec![]).await?;
    let (endpoint_id, secret) = register(&env, &user, &receiver.url()).await?;
    let export_id = finished_export(&env, &user).await?;

    let received = receiver.next().await?;
    verify(&secret, &received).map_err(|e| anyhow::anyhow!("not verified: {e:?}"))?;
    assert!(
        verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &received).is_err(),
        "another secret does not verify"
    );
    // The client's helper for Rust receivers agrees.
    let typed = exports_client::webhooks::verify_delivery(&secret, &received.headers, &received.body)?;
    assert_eq!(
        (typed.type_, typed.data.export_id),
        (WebhookEventType::ExportDone, export_id)
    );
    let event: serde_json::Value = serde_json::from_slice(&received.body)?;
    assert_eq!(event["type"], "export.done");
    assert_eq!(event["data"]["export_id"], export_id.to_string());
    assert_eq!(event["data"]["status"], "done");
    assert_eq!(
        event["data"]["download_url"],
        serde_json::Value::Null,
        "links are short-lived"
    );
    assert!(event["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    // The event is what the spec says a delivery carries.
    let spec = exports_spec::Spec::bundled();
    spec.validate(
        &serde_json::json!({"$ref": "#/components/schemas/WebhookEvent"}),
        &event,
    )
    .map_err(|problems| anyhow::anyhow!("{problems:?}"))?;

    assert_eq!(
        all_delivered(&env).await?,
        [(endpoint_id, 1, true)],
        "one event, one attempt"
    );
    env.finish().await
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_event_until_it_takes_it() -> anyhow::Result<()> {
    let env = env().await?;
    let user = env.user(SCOPES).await?;
    // Down for two connections, then 500 three times, then up.
    let script = vec![
        Step::Drop,
        Step::Drop,
        Step::Answer(500),
        Step::Answer(500),
        Step::Answer(500),
    ];
    let mut receiver = Receiver::start(script).await?;
    let (endpoint_id, secret) = register(&env, &user, &receiver.url()).await?;
    finished_export(&env, &user).await?;

    let mut ids = Vec::new();
    for _ in 0..4 {
        let received = receiver.next().await?;
        verify(&secret, &received).map_err(|e| anyhow::anyhow!("not verified: {e:?}"))?;
        ids.push(received.headers["webhook-id"].to_str()?.to_string());
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one webhook-id for every attempt: {ids:?}"
    );
    assert_eq!(
        all_delivered(&env).await?,
        [(endpoint_id, 6, true)],
        "two refused connections, three 500s, one 200"
    );
    // What the API shows of it.
    let deliveries = env
        .client(&user)
        .list_webhook_deliveries(&endpoint_id)
        .await?
        .into_inner()
        .items;
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery.delivery_id.to_string(), ids[0]);
    assert_eq!(delivery.status, WebhookDeliveryStatus::Delivered);
    assert_eq!((delivery.attempts, delivery.last_response_status), (6, Some(200)));
    assert!(delivery.delivered_at.is_some() && delivery.last_error.is_none());
    env.finish().await
}

#[tokio::test]
async fn a_deleted_endpoint_gets_nothing_and_a_rotated_secret_signs_the_next_event() -> anyhow::Result<()> {
    let env = env().await?;
    let user = env.user(SCOPES).await?;
    let (mut kept, deleted) = (Receiver::start(vec![]).await?, Receiver::start(vec![]).await?);
    let (kept_id, old_secret) = register(&env, &user, &kept.url()).await?;
    let (deleted_id, _) = register(&env, &user, &deleted.url()).await?;
    let client = env.client(&user);
    client.delete_webhook_endpoint(&deleted_id).await?;
    let new_secret = client
        .rotate_webhook_secret(&kept_id)
        .await?
        .into_inner()
        .secret
        .to_string();

    finished_export(&env, &user).await?;
    let received = kept.next().await?;
    verify(&new_secret, &received).map_err(|e| anyhow::anyhow!("not verified: {e:?}"))?;
    assert!(
        verify(&old_secret, &received).is_err(),
        "the old secret no longer signs"
    );
    // The outbox holds the kept endpoint's event only: the deleted one was never announced.
    assert_eq!(all_delivered(&env).await?, [(kept_id, 1, true)]);
    env.finish().await
}

const WORKER: &str = env!("CARGO_BIN_EXE_exports-server-under-test");

#[tokio::test]
async fn an_event_whose_worker_is_killed_mid_delivery_is_delivered_by_another() -> anyhow::Result<()> {
    // No worker in the test's process: real worker processes, one of them killed.
    let env = TestEnv::start_setup_with(Setup::default(), |settings| {
        settings.webhook_urls.allow_private = true
    })
    .await?;
    let user = env.user(SCOPES).await?;
    let mut receiver = Receiver::start(vec![Step::Hold]).await?;
    let (endpoint_id, secret) = register(&env, &user, &receiver.url()).await?;
    // A cancel announces at once, with no worker needed to finish the export.
    let client = env.client(&user);
    let export_id = create(&client, &every_user_as_csv()).await?;
    client.cancel_export(&export_id).await?;

    let logs = tempfile::tempdir()?;
    let log = logs.path().join("workers.log");
    let worker = |env: &TestEnv| -> anyhow::Result<std::process::Command> {
        let mut command = env.worker_command(WORKER, &log)?;
        command.args(["--webhooks-allow-private", "--webhook-poll-ms", "20"]);
        Ok(command)
    };
    let mut first = exports_tests::ChildProcess::spawn(worker(&env)?)?;
    let held = receiver.next().await?;
    first.kill(); // SIGKILL in the middle of the attempt: its claim's lease runs out unrecorded
    let mut second = exports_tests::ChildProcess::spawn(worker(&env)?)?;
    let delivered = receiver.next().await?;
    verify(&secret, &delivered).map_err(|e| anyhow::anyhow!("not verified: {e:?}"))?;
    assert_eq!(
        held.headers["webhook-id"], delivered.headers["webhook-id"],
        "the same event"
    );
    // The killed attempt left no trace: the event took one recorded attempt.
    assert_eq!(all_delivered(&env).await?, [(endpoint_id, 1, true)]);
    second.kill(); // before the test's Redis keys go: a live worker would make its stream again
    env.finish().await
}

#[tokio::test]
async fn a_flushed_redis_loses_no_event() -> anyhow::Result<()> {
    let env = env().await?;
    let user = env.user(SCOPES).await?;
    let mut receiver = Receiver::start(vec![Step::Answer(500)]).await?;
    let (endpoint_id, secret) = register(&env, &user, &receiver.url()).await?;
    finished_export(&env, &user).await?;
    // The event is due again when Redis loses everything (the test's keys: the server is shared).
    let refused = receiver.next().await?;
    env.flush_redis().await?;
    let delivered = receiver.next().await?;
    verify(&secret, &delivered).map_err(|e| anyhow::anyhow!("not verified: {e:?}"))?;
    assert_eq!(refused.headers["webhook-id"], delivered.headers["webhook-id"]);
    assert_eq!(all_delivered(&env).await?, [(endpoint_id, 2, true)]);
    env.finish().await
}

#[tokio::test]
async fn a_name_that_starts_resolving_to_a_private_address_is_refused_at_delivery() -> anyhow::Result<()> {
    use exports_spec::webhook_url::UrlPolicy;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    // Where a connection would land if the check at delivery were missing.
    let loopback = std::net::TcpListener::bind("127.0.0.1:0")?;
    loopback.set_nonblocking(true)?;
    let url = format!("https://hooks.test:{}/exports", loopback.local_addr()?.port());
    // The name is public when the API checks it, and loopback when the worker delivers.
    let resolving_to = |address: &str| UrlPolicy {
        allow_private: false,
        resolve: Arc::new(BTreeMap::from([(
            "hooks.test".to_string(),
            vec![address.parse().expect("an address")],
        )])),
    };
    let setup = Setup {
        worker: Some(exports_server::worker::WorkerArgs {
            webhook_urls: resolving_to("127.0.0.1"),
            ..quick_worker()
        }),
        ..Setup::default()
    };
    let env = TestEnv::start_setup_with(setup, |settings| {
        settings.webhook_urls = resolving_to("93.184.215.14")
    })
    .await?;
    let user = env.user(SCOPES).await?;
    let (endpoint_id, _) = register(&env, &user, &url).await?;
    finished_export(&env, &user).await?;
    let client = env.client(&user);

    let deadline = tokio::time::Instant::now() + FINISH;
    let delivery = loop {
        let deliveries = client
            .list_webhook_deliveries(&endpoint_id)
            .await?
            .into_inner()
            .items;
        match deliveries.into_iter().next() {
            Some(delivery) if delivery.attempts > 0 => break delivery,
            _ if tokio::time::Instant::now() > deadline => anyhow::bail!("no attempt was made"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(
        delivery.status,
        WebhookDeliveryStatus::Pending,
        "tried again later"
    );
    assert_eq!(delivery.last_response_status, None);
    let error = delivery.last_error.unwrap_or_default();
    assert!(
        error.contains("hooks.test resolves to no public address"),
        "{error}"
    );
    assert!(
        matches!(loopback.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the worker connected to loopback"
    );
    env.finish().await
}

/// An event for each of the user's endpoints, at once: the export cancelled (or, when the
/// worker finished it first, its `export.done`).
async fn announce(env: &TestEnv, user: &TestUser) -> anyhow::Result<()> {
    let client = env.client(user);
    let id = create(&client, &every_user_as_csv()).await?;
    if client.cancel_export(&id).await.is_err() {
        wait_for_export(&client, &id, FINISH, |e| e.status == ExportStatus::Done).await?;
    }
    Ok(())
}

/// From an event's status change (its body's `timestamp`) to its arrival now.
fn delay_of(received: &exports_tests::receiver::Received) -> anyhow::Result<Duration> {
    let event: serde_json::Value = serde_json::from_slice(&received.body)?;
    let occurred: chrono::DateTime<chrono::Utc> = event["timestamp"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no timestamp in {event}"))?
        .parse()?;
    Ok((chrono::Utc::now() - occurred).to_std().unwrap_or_default())
}

#[tokio::test]
async fn one_users_slow_endpoints_do_not_delay_another_users_events() -> anyhow::Result<()> {
    let env = env().await?;
    let (slow_user, other_user) = (env.user(SCOPES).await?, env.user(SCOPES).await?);
    // Ten endpoints that take every request and answer only when the test releases them.
    let mut slow = Vec::new();
    for _ in 0..exports_spec::webhooks::MAX_ENDPOINTS_PER_USER {
        let receiver = Receiver::start(vec![Step::HoldUntilReleased; 1000]).await?;
        register(&env, &slow_user, &receiver.url()).await?;
        slow.push(receiver);
    }
    let mut other = Receiver::start(vec![]).await?;
    register(&env, &other_user, &other.url()).await?;

    // More events for each slow endpoint than it may have attempts in flight.
    let bound = quick_worker().webhook_endpoint_concurrency;
    let slow_events = bound + 5;
    for _ in 0..slow_events {
        announce(&env, &slow_user).await?;
    }
    // Every slow endpoint has attempts waiting on it.
    for receiver in &mut slow {
        receiver.next().await?;
    }

    // The other user's events, one after another, each delivered before the next is made.
    let mut delays = Vec::new();
    for _ in 0..20 {
        announce(&env, &other_user).await?;
        delays.push(delay_of(&other.next().await?)?);
    }
    delays.sort();
    let p99 = delays[(delays.len() * 99).div_ceil(100) - 1];
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}: {delays:?}");

    // Meanwhile the slow user's events are still being delivered (none answered yet), and
    // no endpoint has more attempts in flight than its bound.
    let client = env.pool.get().await?;
    let slow_delivered: i64 = client
        .query_one(
            "SELECT count(*) FROM webhook_deliveries delivery
             JOIN webhook_endpoints endpoint ON endpoint.id = delivery.endpoint_id
             WHERE endpoint.user_id = $1 AND delivery.delivered_at IS NOT NULL",
            &[&slow_user.id],
        )
        .await?
        .get(0);
    assert_eq!(slow_delivered, 0, "the slow endpoints answered nothing yet");
    let most_in_flight: i64 = client
        .query_one(
            "SELECT coalesce(max(attempts), 0) FROM (
                 SELECT count(*) AS attempts FROM webhook_deliveries
                 WHERE locked_until > now() AND delivered_at IS NULL GROUP BY endpoint_id) per_endpoint",
            &[],
        )
        .await?
        .get(0);
    assert!(
        (1..=bound as i64).contains(&most_in_flight),
        "{most_in_flight} attempts in flight for one endpoint"
    );
    drop(client);

    // Released, the slow endpoints take every event: nothing was lost to the wait.
    for receiver in &slow {
        receiver.release();
    }
    let rows = all_delivered(&env).await?;
    assert_eq!(rows.len(), slow_events * slow.len() + 20);
    assert!(rows.iter().all(|(_, _, delivered)| *delivered));
    env.finish().await
}

#[tokio::test]
async fn a_proxy_named_by_the_environment_is_not_used_for_deliveries() -> anyhow::Result<()> {
    // No worker in the test's process: a real worker process, with the proxy variables set.
    let env = TestEnv::start_setup_with(Setup::default(), |settings| {
        settings.webhook_urls.allow_private = true
    })
    .await?;
    let user = env.user(SCOPES).await?;
    let mut receiver = Receiver::start(vec![]).await?;
    let (endpoint_id, secret) = register(&env, &user, &receiver.url()).await?;
    // A listener posing as a proxy: a delivery through it would connect here.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0")?;
    proxy.set_nonblocking(true)?;
    let proxy_url = format!("http://{}", proxy.local_addr()?);
    // A cancel announces at once, with no worker needed to finish the export.
    let client = env.client(&user);
    let export_id = create(&client, &every_user_as_csv()).await?;
    client.cancel_export(&export_id).await?;

    let logs = tempfile::tempdir()?;
    let mut worker = env.worker_command(WORKER, &logs.path().join("worker.log"))?;
    worker.args(["--webhooks-allow-private", "--webhook-poll-ms", "20"]);
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        worker.env(name, &proxy_url);
    }
    let mut worker = exports_tests::ChildProcess::spawn(worker)?;
    let delivered = receiver.next().await?;
    verify(&secret, &delivered).map_err(|e| anyhow::anyhow!("not verified: {e:?}"))?;
    assert_eq!(all_delivered(&env).await?, [(endpoint_id, 1, true)]);
    assert!(
        matches!(proxy.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the proxy got a connection"
    );
    worker.kill(); // before the test's Redis keys go: a live worker would make its stream again
    env.finish().await
}
