//! Webhook deliveries (issue 13, items 2 to 4), against the real server, worker, PostgreSQL
//! and Redis, to real HTTP receivers in the test: a finished export is announced once, signed
//! so that the official Standard Webhooks library verifies it; a receiver that fails, or is
//! down, gets the event again with the same `webhook-id` until it takes it; a deleted endpoint
//! gets nothing; a rotated secret signs the next delivery.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use exports_client::types::{
    CreateUserExport, CreateWebhookEndpoint, ExportFormat, ExportStatus, WebhookDeliveryStatus,
    WebhookEventType,
};
use exports_tests::{create, quick_worker, wait_for_export, Setup, TestEnv, TestUser};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use tokio::sync::mpsc;

const FINISH: Duration = Duration::from_secs(60);

/// One request a receiver got.
#[derive(Debug)]
struct Received {
    headers: http::HeaderMap,
    body: Bytes,
}

/// What a receiver does with each connection, in order; once the script is used up, it takes
/// every request with `200`.
#[derive(Clone, Copy)]
enum Step {
    /// Closes the connection before reading anything: the receiver is down.
    Drop,
    /// Answers with this status.
    Answer(u16),
    /// Takes the request and never answers.
    Hold,
}

/// An HTTP receiver on loopback that records every request and follows its script.
struct Receiver {
    addr: SocketAddr,
    received: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(script: Vec<Step>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (sender, received) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let step = script.lock().unwrap().pop_front().unwrap_or(Step::Answer(200));
                let (status, hold) = match step {
                    Step::Drop => {
                        drop(stream);
                        continue;
                    }
                    Step::Answer(status) => (status, false),
                    Step::Hold => (200, true),
                };
                let sender = sender.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                            let sender = sender.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                let _ = sender.send(Received {
                                    headers: parts.headers,
                                    body,
                                });
                                if hold {
                                    std::future::pending::<()>().await;
                                }
                                let mut response = Response::new(Full::new(Bytes::new()));
                                *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                                Ok::<_, Infallible>(response)
                            }
                        });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Ok(Self { addr, received, task })
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/exports", self.addr)
    }

    /// The next request, within a generous bound.
    async fn next(&mut self) -> anyhow::Result<Received> {
        tokio::time::timeout(FINISH, self.received.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the receiver stopped"))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The API and a worker, webhooks allowed to loopback (the receivers are the test's own).
async fn env() -> anyhow::Result<TestEnv> {
    let setup = Setup {
        worker: Some(quick_worker()),
        ..Setup::default()
    };
    TestEnv::start_setup_with(setup, |settings| settings.webhooks_allow_private = true).await
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
    }
}

/// A finished export of the user's.
async fn finished_export(env: &TestEnv, user: &TestUser) -> anyhow::Result<uuid::Uuid> {
    let client = env.client(user);
    let id = create(&client, &every_user_as_csv()).await?;
    wait_for_export(&client, &id, FINISH, |e| e.status == ExportStatus::Done).await?;
    Ok(id)
}

/// Verified with the official library, as a receiver would.
fn verify(secret: &str, received: &Received) -> Result<(), standardwebhooks::WebhookError> {
    standardwebhooks::Webhook::new(secret)?.verify(&received.body, &received.headers)
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
    let user = env
        .user(&["exports:read", "exports:write", "webhooks:manage"])
        .await?;
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
    let user = env
        .user(&["exports:read", "exports:write", "webhooks:manage"])
        .await?;
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
    let user = env
        .user(&["exports:read", "exports:write", "webhooks:manage"])
        .await?;
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
        settings.webhooks_allow_private = true
    })
    .await?;
    let user = env
        .user(&["exports:read", "exports:write", "webhooks:manage"])
        .await?;
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
    first.kill(); // SIGKILL in the middle of the attempt: its transaction dies with its connection
    let _second = exports_tests::ChildProcess::spawn(worker(&env)?)?;
    let delivered = receiver.next().await?;
    verify(&secret, &delivered).map_err(|e| anyhow::anyhow!("not verified: {e:?}"))?;
    assert_eq!(
        held.headers["webhook-id"], delivered.headers["webhook-id"],
        "the same event"
    );
    // The killed attempt left no trace: the event took one recorded attempt.
    assert_eq!(all_delivered(&env).await?, [(endpoint_id, 1, true)]);
    env.finish().await
}
