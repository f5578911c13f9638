//! A service started while its dependencies are down (Redis unreachable, the S3 bucket not
//! made yet) starts anyway: each process says what is wrong in one log line, the API's
//! `/health/ready` names what is down, and an export created meanwhile is done once they
//! come back.

use std::time::Duration;

use exports_client::types::ExportStatus;
use exports_tests::{api_address, redis_url, until, wait_for_export, ChildProcess, Relay, Setup, TestEnv};

const BINARY: &str = env!("CARGO_BIN_EXE_exports-server-under-test");
/// A generous upper bound for anything that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(60);

fn lines_saying(log: &std::path::Path, message: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(message))
        .count()
}

#[tokio::test]
async fn a_service_started_while_redis_and_the_bucket_are_down_catches_up() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup {
        s3: true,
        worker: None,
    })
    .await?;
    env.seed_users(30).await?;
    let alice = env.writer().await?;
    let s3 = env.s3.as_ref().unwrap();
    s3.remove_bucket()?;
    let redis = Relay::start(redis_url().trim_start_matches("redis://").parse()?, false).await?;
    let down_redis = format!("redis://127.0.0.1:{}", redis.port);
    let logs = tempfile::tempdir()?;
    let (serve_log, worker_log) = (logs.path().join("serve.log"), logs.path().join("worker.log"));
    let mut serve = env.serve_command(BINARY, &serve_log)?;
    serve.env("EXPORTS_REDIS_URL", &down_redis);
    let mut serve = ChildProcess::spawn(serve)?;
    let mut worker = env.worker_command(BINARY, &worker_log)?;
    worker.env("EXPORTS_REDIS_URL", &down_redis);
    let mut worker = ChildProcess::spawn(worker)?;

    // Each process says what is down, once, and serves or waits.
    let address = api_address(&serve_log, PROMPTLY).await?;
    // Each process checks in the background, in its own time: wait for both to have said it.
    until(PROMPTLY, "both processes say what is down", async || {
        Ok(lines_saying(&worker_log, "storage is unreachable") > 0
            && lines_saying(&serve_log, "storage is unreachable") > 0)
    })
    .await?;
    assert_eq!(lines_saying(&worker_log, "storage is unreachable"), 1);
    assert_eq!(
        lines_saying(&serve_log, "redis is unreachable; starting anyway"),
        1
    );
    assert_eq!(
        lines_saying(&worker_log, "redis is unreachable; starting anyway"),
        1
    );
    let http = reqwest::Client::new();
    let ready = http.get(format!("http://{address}/health/ready")).send().await?;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await?;
    assert_eq!(
        body["error"]["details"],
        serde_json::json!([{"field": "redis", "issue": "unreachable"}])
    );

    // PostgreSQL is up: the export is recorded, to be queued once Redis answers.
    let created = http
        .post(format!("http://{address}/api/v1/exports/users"))
        .bearer_auth(&alice.key)
        .json(&serde_json::json!({"format": "csv"}))
        .send()
        .await?;
    assert_eq!(created.status(), 202);
    let created: serde_json::Value = created.json().await?;
    let export_id = created["export_id"].as_str().unwrap().parse()?;

    redis.restore();
    s3.make_bucket()?;
    let client = env.client(&alice);
    let done = wait_for_export(&client, &export_id, PROMPTLY, |e| e.status == ExportStatus::Done)
        .await
        .map_err(|error| error.context(std::fs::read_to_string(&worker_log).unwrap_or_default()))?;
    assert_eq!(
        done.progress.rows_written,
        env.count("SELECT count(*) FROM users").await?
    );
    until(PROMPTLY, "/health/ready answers 200", async || {
        let ready = http.get(format!("http://{address}/health/ready")).send().await?;
        Ok(ready.status() == 200)
    })
    .await?;
    assert!(serve.0.try_wait()?.is_none(), "the API still runs");
    assert!(worker.0.try_wait()?.is_none(), "the worker still runs");
    serve.kill();
    worker.kill(); // before the test's Redis keys go: a live worker would make its stream again
    env.finish().await
}
