//! Stopping behind a load balancer, as an orchestrator stops the processes: SIGTERM first
//! takes the API out of rotation while it still serves, and lets a worker's running export
//! finish; a second signal cuts the grace short.

use std::time::Duration;

use exports_client::types::{CreateUserExport, ExportFormat, ExportStatus};
use exports_tests::{create, until, wait_for_export, ChildProcess, Setup, TestEnv};

const BINARY: &str = env!("CARGO_BIN_EXE_exports-server-under-test");
/// A generous upper bound for anything that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(60);
/// Longer than any test: only the second signal may end it.
const LONG_GRACE: &str = "3600";

/// Whether it exited with status 0, within a generous bound (its log on failure).
async fn exited_cleanly(process: &mut ChildProcess, log: &std::path::Path) -> anyhow::Result<bool> {
    let status = process
        .exited(PROMPTLY)
        .await
        .map_err(|error| error.context(std::fs::read_to_string(log).unwrap_or_default()))?;
    Ok(status.success())
}

fn logged(log: &std::path::Path, message: &str) -> bool {
    std::fs::read_to_string(log).unwrap_or_default().contains(message)
}

#[tokio::test]
async fn sigterm_takes_the_api_out_of_rotation_while_it_still_serves() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let alice = env.writer().await?;
    let logs = tempfile::tempdir()?;
    let log_path = logs.path().join("serve.log");
    let mut serve = env.serve_command(BINARY, &log_path)?;
    serve.args(["--shutdown-grace-secs", LONG_GRACE]);
    let mut serve = ChildProcess::spawn(serve)?;
    let address = exports_tests::api_address(&log_path, PROMPTLY).await?;
    let http = reqwest::Client::new();
    let get = |path: &str| {
        http.get(format!("http://{address}{path}"))
            .bearer_auth(&alice.key)
            .send()
    };
    assert_eq!(get("/health/ready").await?.status(), 200);

    serve.terminate()?;
    until(PROMPTLY, "/health/ready answers 503", async || {
        Ok(get("/health/ready").await?.status() == 503)
    })
    .await?;
    let unready = get("/health/ready").await?;
    assert!(unready.headers().contains_key("retry-after"));
    let body: serde_json::Value = unready.json().await?;
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert_eq!(
        body["error"]["details"],
        serde_json::json!([{"field": "server", "issue": "shutting_down"}])
    );
    // Everything else is still served, as before the signal.
    assert_eq!(get("/health/live").await?.status(), 200);
    assert_eq!(get("/api/v1/exports/users").await?.status(), 200);

    serve.terminate()?;
    assert!(exited_cleanly(&mut serve, &log_path).await?);
    assert!(logged(&log_path, "shutdown grace cut short"));
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the listener is closed"
    );
    env.finish().await
}

#[tokio::test]
async fn sigterm_lets_a_workers_running_export_go_on_and_a_second_hands_it_back() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup::default()).await?;
    env.seed_users(3000).await?;
    let client = env.client(&env.writer().await?);
    let logs = tempfile::tempdir()?;
    let log = logs.path().join("worker.log");
    let mut holding = env.worker_command(BINARY, &log)?;
    holding.args(["--hold-after-rows", "1", "--job-grace-secs", LONG_GRACE]);
    let mut worker = ChildProcess::spawn(holding)?;
    let export = CreateUserExport {
        format: ExportFormat::Csv,
        filters: None,
        columns: None,
        compression: None,
    };
    let id = create(&client, &export).await?;
    wait_for_export(&client, &id, PROMPTLY, |e| e.progress.rows_written > 0).await?;

    worker.terminate()?;
    until(PROMPTLY, "the worker stops taking jobs", async || {
        Ok(logged(&log, "shutting down: taking no new jobs"))
    })
    .await?;
    let running = client.get_export(&id).await?.into_inner();
    assert_eq!(
        running.status,
        ExportStatus::Processing,
        "still the worker's in its grace"
    );

    worker.terminate()?;
    assert!(exited_cleanly(&mut worker, &log).await?);
    let handed_back = client.get_export(&id).await?.into_inner();
    assert_eq!(handed_back.status, ExportStatus::Pending, "{handed_back:?}");
    assert_eq!(env.queued_jobs().await?.len(), 1, "queued again at once");
    env.finish().await
}

/// A log file is no terminal: JSON lines, which every other test reads, unless text is asked
/// for; a format the server does not know stops it before it starts.
#[tokio::test]
async fn logs_are_json_unless_text_is_asked_for() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let logs = tempfile::tempdir()?;
    let started = |format: &str, log: &std::path::Path| -> anyhow::Result<ChildProcess> {
        let mut serve = env.serve_command(BINARY, log)?;
        serve.env("EXPORTS_LOG_FORMAT", format);
        ChildProcess::spawn(serve)
    };
    let listening = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .find(|line| line.contains("API listening"))
            .map(String::from)
    };
    for (format, json) in [("text", false), ("auto", true), ("json", true)] {
        let log = logs.path().join(format!("{format}.log"));
        let mut serve = started(format, &log)?;
        until(PROMPTLY, "the API says where it listens", async || {
            Ok(listening(&log).is_some())
        })
        .await?;
        serve.kill();
        let line = listening(&log).expect("found above");
        let parsed = serde_json::from_str::<serde_json::Value>(&line);
        assert_eq!(parsed.is_ok(), json, "{format}: {line}");
        if !json {
            assert!(line.contains(" INFO "), "{line}");
            assert!(line.contains("local_addr="), "the fields, for people: {line}");
        }
    }
    let log = logs.path().join("yaml.log");
    let mut refused = started("yaml", &log)?;
    assert!(!refused.exited(PROMPTLY).await?.success());
    let said = std::fs::read_to_string(&log)?;
    assert!(
        said.contains("EXPORTS_LOG_FORMAT is `auto`, `json` or `text`, not `yaml`"),
        "{said}"
    );
    env.finish().await
}
