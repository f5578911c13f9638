//! Exports survive what goes wrong in production: a worker killed mid-export, a wiped Redis,
//! an unreachable object store, a cancel or a time limit mid-way, a job delivered twice.

use std::time::Duration;

use exports_client::types::{CreateUserExport, ExportCompression, ExportFormat, ExportStatus};
use exports_server::worker::WorkerArgs;
use exports_server::FAULT_INJECTION_HELD;
use exports_tests::{
    create, download, quick_worker, stored_objects, until, wait_for_export, ChildProcess, Setup, TestEnv,
};
use uuid::Uuid;

const FINISH: Duration = Duration::from_secs(90);

fn export(format: ExportFormat) -> CreateUserExport {
    CreateUserExport {
        format,
        filters: None,
        columns: None,
        compression: None,
    }
}

async fn attempts(env: &TestEnv, id: &Uuid) -> anyhow::Result<i32> {
    Ok(env
        .pool
        .get()
        .await?
        .query_one("SELECT attempts FROM exports WHERE id = $1", &[id])
        .await?
        .get(0))
}

/// A worker that holds every export once it has written its first rows, until the export is
/// cancelled, interrupted or timed out: a test acts on an export under way however fast the
/// machine is.
fn holding_worker() -> WorkerArgs {
    WorkerArgs {
        hold_after_rows: Some(1),
        ..quick_worker()
    }
}

/// Starts an XLSX export of every user and waits until a holding worker has written rows.
async fn export_under_way(client: &exports_client::Client) -> anyhow::Result<Uuid> {
    let id = create(client, &export(ExportFormat::Xlsx)).await?;
    let under_way = wait_for_export(client, &id, FINISH, |e| {
        e.status != ExportStatus::Pending && e.progress.rows_written > 0
    })
    .await?;
    assert_eq!(under_way.status, ExportStatus::Processing, "{under_way:?}");
    Ok(id)
}

const WORKER: &str = env!("CARGO_BIN_EXE_exports-server-under-test");

/// A fresh worker process finishes the export, in its second attempt, with every user (the
/// seeded ones and the caller): returns how many that is.
async fn finished_by_a_second_worker(
    env: &TestEnv,
    client: &exports_client::Client,
    id: Uuid,
    log: &std::path::Path,
) -> anyhow::Result<i64> {
    let mut second = ChildProcess::spawn(env.worker_command(WORKER, log)?)?;
    let done = wait_for_export(client, &id, FINISH, |e| e.status == ExportStatus::Done).await;
    second.kill();
    let done = done.map_err(|error| error.context(std::fs::read_to_string(log).unwrap_or_default()))?;
    let users = env.count("SELECT count(*) FROM users").await?;
    assert_eq!(done.progress.rows_written, users);
    assert_eq!(attempts(env, &id).await?, 2);
    Ok(users)
}

#[tokio::test]
async fn a_killed_workers_export_is_finished_by_another() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup {
        s3: true,
        worker: None,
    })
    .await?;
    env.seed_users(3000).await?;
    let logs = tempfile::tempdir()?;
    let log = logs.path().join("workers.log");
    let alice = env.writer().await?;
    let client = env.client(&alice);
    let mut holding = env.worker_command(WORKER, &log)?;
    holding.args(["--hold-after-rows", "1"]);
    let mut first = ChildProcess::spawn(holding)?;
    let id = export_under_way(&client).await?;
    first.kill(); // SIGKILL: no clean-up of any kind

    let users = finished_by_a_second_worker(&env, &client, id, &log).await?;
    let objects = stored_objects(&env.storage).await?;
    assert_eq!(objects.len(), 1, "one object: {objects:?}");
    assert!(objects[0].0.ends_with("attempt-2.xlsx"), "{objects:?}");
    let (_, body) = download(&client, &id).await?;
    use calamine::Reader;
    let mut workbook: calamine::Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(body))?;
    let range = workbook.worksheet_range("Sheet1")?;
    assert_eq!(range.height() as i64, users + 1, "header and every user");
    env.finish().await
}

/// The file a worker is killed in the middle of, with its upload under way (its first part
/// sent, held there by the fault-injection point): a CSV in a local directory; on S3, where an
/// uncompressed CSV is resumed from its parts instead (`resume.rs`), a gzipped one, which is
/// written again from the start.
struct MidUpload {
    request: CreateUserExport,
    /// Users enough for a file past one 5 MiB part, and the row at which the worker holds, its
    /// first part sent (a CSV row is about 100 bytes; gzip packs them 3.3 times).
    users: i64,
    hold_after_rows: &'static str,
    extension: &'static str,
}

impl MidUpload {
    fn on(s3: bool) -> Self {
        match s3 {
            false => Self {
                request: export(ExportFormat::Csv),
                users: 80_000,
                hold_after_rows: "70000",
                extension: "csv",
            },
            true => Self {
                request: export(ExportFormat::Csv).with_compression(ExportCompression::Gzip),
                users: 220_000,
                hold_after_rows: "200000",
                extension: "csv.gz",
            },
        }
    }
}

/// An export whose worker was SIGKILLed while its upload was under way (`MidUpload`): no
/// clean-up of any kind. Returns the environment, the export, its owner's client, and the
/// workers' log (in `logs`).
async fn killed_mid_upload(
    s3: bool,
) -> anyhow::Result<(TestEnv, Uuid, exports_client::Client, tempfile::TempDir)> {
    let file = MidUpload::on(s3);
    let env = TestEnv::start_setup(Setup { s3, worker: None }).await?;
    env.seed_users(file.users).await?;
    let logs = tempfile::tempdir()?;
    let log = logs.path().join("workers.log");
    let client = env.client(&env.writer().await?);
    let mut holding = env.worker_command(WORKER, &log)?;
    holding.args(["--hold-after-rows", file.hold_after_rows]);
    let mut first = ChildProcess::spawn(holding)?;
    let id = create(&client, &file.request).await?;
    // Held, not merely an upload visible in the store: S3 shows the upload one round trip
    // before the row records its id, and a kill in between leaves an upload nobody knows of.
    until(
        FINISH,
        "the first attempt held, its upload under way",
        async || {
            let held = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(FAULT_INJECTION_HELD);
            Ok(held && !env.unfinished_uploads()?.is_empty())
        },
    )
    .await
    .map_err(|error| error.context(std::fs::read_to_string(&log).unwrap_or_default()))?;
    first.kill();
    Ok((env, id, client, logs))
}

/// A worker SIGKILLed while its upload is under way once left its partial file behind forever:
/// `attempt-1.csv#1` in a local directory, an open multipart upload on S3 (which a listing of
/// objects does not show). The attempt that takes the export over removes it.
async fn a_worker_killed_mid_upload_leaves_nothing_behind(s3: bool) -> anyhow::Result<()> {
    let (env, id, client, logs) = killed_mid_upload(s3).await?;
    let log = logs.path().join("workers.log");

    let users = finished_by_a_second_worker(&env, &client, id, &log).await?;
    assert_eq!(
        env.stored_for(id).await?,
        [format!("exports/{id}/attempt-2.{}", MidUpload::on(s3).extension)],
        "exactly one object"
    );
    assert_eq!(
        env.unfinished_uploads()?,
        Vec::<String>::new(),
        "no upload left open"
    );
    let (_, mut body) = download(&client, &id).await?;
    if s3 {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)?;
        body = plain;
    }
    assert_eq!(
        body.iter().filter(|&&byte| byte == b'\n').count() as i64,
        users + 1,
        "header and every user"
    );
    env.finish().await
}

#[tokio::test]
async fn a_worker_killed_mid_upload_leaves_nothing_behind_in_a_local_directory() -> anyhow::Result<()> {
    a_worker_killed_mid_upload_leaves_nothing_behind(false).await
}

#[tokio::test]
async fn a_worker_killed_mid_upload_leaves_nothing_behind_on_s3() -> anyhow::Result<()> {
    a_worker_killed_mid_upload_leaves_nothing_behind(true).await
}

/// The same crash, but the export is cancelled instead of taken over: the sweeper removes what
/// the killed attempt left once the export is final.
async fn what_a_killed_attempt_left_is_swept_once_its_export_is_cancelled(s3: bool) -> anyhow::Result<()> {
    let (env, id, client, _logs) = killed_mid_upload(s3).await?;
    let cancelled = client.cancel_export(&id).await?.into_inner();
    assert_eq!(cancelled.status, ExportStatus::Cancelled);

    let sweeper = env.start_worker(quick_worker()).await?;
    let swept = until(
        FINISH,
        "the killed attempt's upload and files removed",
        async || Ok(env.stored_for(id).await?.is_empty() && env.unfinished_uploads()?.is_empty()),
    )
    .await;
    sweeper.shutdown(std::future::pending()).await;
    swept?;
    let left = env
        .count(&format!(
            "SELECT count(*) FROM exports WHERE id = '{id}' AND upload_key IS NOT NULL"
        ))
        .await?;
    assert_eq!(left, 0, "the row no longer points at an upload");
    env.finish().await
}

#[tokio::test]
async fn what_a_killed_attempt_left_is_swept_once_its_export_is_cancelled_in_a_local_directory(
) -> anyhow::Result<()> {
    what_a_killed_attempt_left_is_swept_once_its_export_is_cancelled(false).await
}

#[tokio::test]
async fn what_a_killed_attempt_left_is_swept_once_its_export_is_cancelled_on_s3() -> anyhow::Result<()> {
    what_a_killed_attempt_left_is_swept_once_its_export_is_cancelled(true).await
}

#[tokio::test]
async fn exports_complete_after_redis_loses_the_queue() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup::default()).await?;
    env.seed_users(300).await?;
    let alice = env.writer().await?;
    let client = env.client(&alice);
    // Queued while no worker runs, then the queue is wiped (Redis here keeps nothing on disk).
    let mut ids = Vec::new();
    for format in [ExportFormat::Csv, ExportFormat::Xlsx] {
        ids.push(
            client
                .create_user_export(None, &export(format))
                .await?
                .into_inner()
                .export_id,
        );
    }
    // One more delivered twice: it must still run once.
    env.queue.enqueue(ids[0], 0).await?;
    env.queue.delete_stream().await?;
    assert!(env.queued_jobs().await?.is_empty());

    let worker = env.start_worker(quick_worker()).await?;
    let bob = env.writer().await?;
    let bob_client = env.client(&bob);
    let late = create(&bob_client, &export(ExportFormat::Csv)).await?;
    env.queue.enqueue(late, 0).await?; // a duplicate of a live job
                                       // Wiped again once the worker has read from the stream and gone back to waiting on it:
                                       // its consumer group is gone too.
    wait_for_export(&bob_client, &late, FINISH, |e| e.status == ExportStatus::Done).await?;
    let latest = create(&bob_client, &export(ExportFormat::Xlsx)).await?;
    env.queue.delete_stream().await?;

    for (client, id) in [
        (&client, ids[0]),
        (&client, ids[1]),
        (&bob_client, late),
        (&bob_client, latest),
    ] {
        let done = wait_for_export(client, &id, FINISH, |e| e.status == ExportStatus::Done).await?;
        assert_eq!(
            done.progress.rows_written,
            env.count("SELECT count(*) FROM users").await?
        );
    }
    for id in [ids[0], ids[1], late, latest] {
        assert_eq!(attempts(&env, &id).await?, 1, "{id} ran once");
    }
    assert_eq!(stored_objects(&env.storage).await?.len(), 4);
    worker.shutdown(std::future::pending()).await;
    env.finish().await
}

#[tokio::test]
async fn an_unreachable_store_is_retried_until_it_returns() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup {
        s3: true,
        worker: Some(quick_worker()),
    })
    .await?;
    env.seed_users(20_000).await?;
    let alice = env.writer().await?;
    let client = env.client(&alice);
    env.s3.as_ref().unwrap().stop();
    let id = create(&client, &export(ExportFormat::Csv)).await?;
    until(FINISH, "a second attempt", async || {
        Ok(attempts(&env, &id).await? >= 2)
    })
    .await?;
    let retrying = client.get_export(&id).await?.into_inner();
    assert!(
        matches!(retrying.status, ExportStatus::Pending | ExportStatus::Processing),
        "{retrying:?}"
    );

    env.s3.as_ref().unwrap().resume();
    let done = wait_for_export(&client, &id, FINISH, |e| e.status == ExportStatus::Done).await?;
    let users = env.count("SELECT count(*) FROM users").await?;
    assert_eq!(done.progress.rows_written, users);
    let objects = stored_objects(&env.storage).await?;
    assert_eq!(
        objects.len(),
        1,
        "only the attempt that finished left a file: {objects:?}"
    );
    let (_, body) = download(&client, &id).await?;
    assert_eq!(body.iter().filter(|&&b| b == b'\n').count() as i64, users + 1);
    env.finish().await
}

#[tokio::test]
async fn past_the_retry_budget_the_export_fails_and_leaves_nothing() -> anyhow::Result<()> {
    let mut worker = quick_worker();
    worker.max_attempts = 2;
    let env = TestEnv::start_setup(Setup {
        s3: true,
        worker: Some(worker),
    })
    .await?;
    env.seed_users(20_000).await?;
    let alice = env.writer().await?;
    let client = env.client(&alice);
    env.s3.as_ref().unwrap().stop();
    let id = create(&client, &export(ExportFormat::Xlsx)).await?;
    let failed = wait_for_export(&client, &id, FINISH, |e| e.status == ExportStatus::Failed).await?;
    assert_eq!(
        failed.error_message.as_deref(),
        Some("The export failed after 2 attempts: the file storage could not be reached. Create a new export to try again.")
    );
    assert!(failed.download_url.is_none());
    env.s3.as_ref().unwrap().resume();
    assert_eq!(stored_objects(&env.storage).await?, vec![]);
    let metrics = env.raw().get(env.url("/metrics")).send().await?.text().await?;
    assert!(
        metrics.contains("exports_jobs_failed_total{format=\"xlsx\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("exports_job_retries_total{format=\"xlsx\"} 1"),
        "{metrics}"
    );
    env.finish().await
}

#[tokio::test]
async fn a_cancelled_export_stops_mid_way_and_leaves_no_file() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup {
        s3: true,
        worker: Some(holding_worker()),
    })
    .await?;
    env.seed_users(3000).await?;
    let alice = env.writer().await?;
    let client = env.client(&alice);
    let id = export_under_way(&client).await?;
    let cancelled = client.cancel_export(&id).await?.into_inner();
    assert_eq!(cancelled.status, ExportStatus::Cancelled);
    until(Duration::from_secs(10), "the worker to stop", async || {
        Ok(env.metrics.in_flight.get() == 0)
    })
    .await?;
    let stopped = client.get_export(&id).await?.into_inner();
    assert_eq!(stopped.status, ExportStatus::Cancelled);
    // It stopped without finishing (its rows may all be written by then: the zip is last).
    let metrics = env.raw().get(env.url("/metrics")).send().await?.text().await?;
    assert!(
        metrics.contains("exports_jobs_succeeded_total{format=\"xlsx\"} 0"),
        "{metrics}"
    );
    assert_eq!(stored_objects(&env.storage).await?, vec![]);
    // Nothing runs it again: its job is gone from the stream, and the sweeper queues only
    // pending and processing exports.
    until(FINISH, "the job to leave the stream", async || {
        Ok(env.queued_jobs().await?.is_empty())
    })
    .await?;
    assert_eq!(attempts(&env, &id).await?, 1);
    env.finish().await
}

#[tokio::test]
async fn an_export_over_the_time_limit_fails_with_a_reason() -> anyhow::Result<()> {
    let worker = WorkerArgs {
        job_timeout_secs: 1,
        ..holding_worker()
    };
    let env = TestEnv::start_setup(Setup {
        worker: Some(worker),
        ..Setup::default()
    })
    .await?;
    env.seed_users(3000).await?;
    let alice = env.writer().await?;
    let client = env.client(&alice);
    let id = create(&client, &export(ExportFormat::Xlsx)).await?;
    let failed = wait_for_export(&client, &id, FINISH, |e| {
        !matches!(e.status, ExportStatus::Pending | ExportStatus::Processing)
    })
    .await?;
    assert_eq!(failed.status, ExportStatus::Failed, "{failed:?}");
    assert_eq!(
        failed.error_message.as_deref(),
        Some("The export took longer than the 1-second limit and was stopped. Narrow the filters or try again later.")
    );
    assert_eq!(stored_objects(&env.storage).await?, vec![]);
    env.finish().await
}

#[tokio::test]
async fn a_worker_shutting_down_hands_its_export_back() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup::default()).await?;
    env.seed_users(3000).await?;
    let alice = env.writer().await?;
    let client = env.client(&alice);
    let first = env
        .start_worker(WorkerArgs {
            job_grace_secs: LONG_GRACE,
            ..holding_worker()
        })
        .await?;
    let id = export_under_way(&client).await?;
    // What SIGTERM and a second signal do: the grace cut short at once.
    first.shutdown(std::future::ready(())).await;
    let handed_back = client.get_export(&id).await?.into_inner();
    assert_eq!(handed_back.status, ExportStatus::Pending);
    assert_eq!(
        attempts(&env, &id).await?,
        0,
        "an interrupted attempt does not count"
    );
    assert_eq!(env.queued_jobs().await?.len(), 1, "queued again at once");
    assert_eq!(stored_objects(&env.storage).await?, vec![]);

    let second = env.start_worker(quick_worker()).await?;
    let done = wait_for_export(&client, &id, FINISH, |e| e.status == ExportStatus::Done).await?;
    assert_eq!(
        done.progress.rows_written,
        env.count("SELECT count(*) FROM users").await?
    );
    assert_eq!(attempts(&env, &id).await?, 1);
    second.shutdown(std::future::pending()).await;
    env.finish().await
}

/// Longer than any test: only the export's end, or a cut, may end it.
const LONG_GRACE: u64 = 3600;

#[tokio::test]
async fn a_worker_shutting_down_lets_its_running_export_finish_and_takes_no_other() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup::default()).await?;
    env.seed_users(3000).await?;
    let client = env.client(&env.writer().await?);
    let (release, released) = tokio::sync::watch::channel(false);
    let worker = env
        .start_worker(WorkerArgs {
            job_grace_secs: LONG_GRACE,
            release_hold: Some(released),
            ..holding_worker()
        })
        .await?;
    let first = export_under_way(&client).await?;
    let stopping = worker.shutdown(std::future::pending());
    tokio::pin!(stopping);
    assert!(
        futures::poll!(&mut stopping).is_pending(),
        "the worker waits for its running export"
    );
    // Queued after the worker was told to stop: left for another worker.
    let second = create(&client, &export(ExportFormat::Csv)).await?;
    release.send(true)?;
    tokio::time::timeout(FINISH, stopping)
        .await
        .map_err(|_| anyhow::anyhow!("the worker did not stop once its export was done"))?;
    let done = client.get_export(&first).await?.into_inner();
    assert_eq!(done.status, ExportStatus::Done, "{done:?}");
    assert_eq!(
        done.progress.rows_written,
        env.count("SELECT count(*) FROM users").await?
    );
    assert_eq!(attempts(&env, &first).await?, 1);
    let left = client.get_export(&second).await?.into_inner();
    assert_eq!(left.status, ExportStatus::Pending, "{left:?}");
    assert_eq!(attempts(&env, &second).await?, 0);
    env.finish().await
}
