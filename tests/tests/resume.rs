//! Resumable exports on S3: an attempt that stops (its worker killed, or handing the export
//! back on SIGTERM) is gone on with by the next attempt from its last completed part, and the
//! file is byte for byte an uninterrupted export's. An upload that vanished, or that a stale
//! attempt's late part spoiled, is written again from the start. Every stop is made at a
//! fault-injection point (`--hold-after-parts`), never by timing.

use std::time::Duration;

use exports_client::types::{CreateUserExport, ExportFormat, ExportStatus};
use exports_server::worker::WorkerArgs;
use exports_server::FAULT_INJECTION_HELD;
use exports_tests::{create, download, quick_worker, until, wait_for_export, ChildProcess, Setup, TestEnv};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_exports-server-under-test");
/// A generous upper bound for anything that should happen promptly.
const FINISH: Duration = Duration::from_secs(120);
/// Users enough for five 5 MiB parts of CSV (about 106 bytes a row): the parts a worker holds
/// after are done and recorded while rows are still being written.
const USERS: i64 = 250_000;

/// The checkpoint an export's row records.
#[derive(Debug)]
struct Checkpointed {
    parts: usize,
    rows: i64,
    key: String,
    upload_id: String,
}

async fn checkpoint(env: &TestEnv, id: Uuid) -> anyhow::Result<Checkpointed> {
    let row = env
        .pool
        .get()
        .await?
        .query_one(
            "SELECT checkpoint, upload_key, upload_id FROM exports WHERE id = $1",
            &[&id],
        )
        .await?;
    let checkpoint: Option<serde_json::Value> = row.get(0);
    let checkpoint = checkpoint.ok_or_else(|| anyhow::anyhow!("no checkpoint recorded"))?;
    Ok(Checkpointed {
        parts: checkpoint["parts"].as_array().map_or(0, Vec::len),
        rows: checkpoint["rows"].as_i64().unwrap_or_default(),
        key: row.get(1),
        upload_id: row.get(2),
    })
}

async fn attempts(env: &TestEnv, id: Uuid) -> anyhow::Result<i32> {
    Ok(env
        .pool
        .get()
        .await?
        .query_one("SELECT attempts FROM exports WHERE id = $1", &[&id])
        .await?
        .get(0))
}

/// The record of the export's end that its worker logs just after recording it.
async fn logged_done(log: &std::path::Path, id: Uuid) -> anyhow::Result<serde_json::Value> {
    until(FINISH, "the export's end logged", async || {
        Ok(logged(log, "export done", id).is_some())
    })
    .await?;
    Ok(logged(log, "export done", id).expect("logged"))
}

/// The workers' JSON log record with this message about this export.
fn logged(log: &std::path::Path, message: &str, id: Uuid) -> Option<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|record| record["message"] == message && record["export_id"] == id.to_string())
}

async fn held(log: &std::path::Path) -> anyhow::Result<()> {
    until(
        FINISH,
        "the worker held at its fault-injection point",
        async || {
            Ok(std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains(FAULT_INJECTION_HELD))
        },
    )
    .await
    .map_err(|error| error.context(std::fs::read_to_string(log).unwrap_or_default()))
}

/// Waits until the export is done, checking on the way that its progress never goes back.
async fn done_with_progress_never_back(
    client: &exports_client::Client,
    id: Uuid,
    log: &std::path::Path,
) -> anyhow::Result<exports_client::types::Export> {
    let deadline = tokio::time::Instant::now() + FINISH;
    let mut shown = Vec::new();
    loop {
        let export = client.get_export(&id).await?.into_inner();
        shown.push(export.progress.rows_written);
        if export.status == ExportStatus::Done {
            assert!(
                shown.windows(2).all(|pair| pair[0] <= pair[1]),
                "rows_written went back: {shown:?}"
            );
            return Ok(export);
        }
        anyhow::ensure!(
            matches!(export.status, ExportStatus::Pending | ExportStatus::Processing),
            "{export:?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not done: {export:?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the export's file is byte for byte the file of a new, uninterrupted export of the
/// same rows.
async fn same_as_uninterrupted(
    client: &exports_client::Client,
    id: Uuid,
    format: ExportFormat,
) -> anyhow::Result<()> {
    let again = create(client, &CreateUserExport::new(format)).await?;
    wait_for_export(client, &again, FINISH, |e| e.status == ExportStatus::Done).await?;
    let (_, resumed) = download(client, &id).await?;
    let (_, whole) = download(client, &again).await?;
    assert!(
        resumed == whole,
        "the files differ: {} bytes against {} uninterrupted",
        resumed.len(),
        whole.len()
    );
    Ok(())
}

enum Stop {
    /// SIGKILL: no clean-up of any kind; the export is taken over once its lease runs out.
    Kill,
    /// SIGTERM with no grace: the export is handed back with its checkpoint.
    Terminate,
}

/// An environment on s3s-fs with no worker, `USERS` users, a client of one of them, and a
/// directory for the workers' log.
async fn seeded() -> anyhow::Result<(TestEnv, exports_client::Client, tempfile::TempDir)> {
    let env = TestEnv::start_setup(Setup {
        s3: true,
        worker: None,
    })
    .await?;
    env.seed_users(USERS).await?;
    let client = env.client(&env.writer().await?);
    Ok((env, client, tempfile::tempdir()?))
}

async fn resumes_from_its_last_part(format: ExportFormat, stop: Stop) -> anyhow::Result<()> {
    let (env, client, logs) = seeded().await?;
    let users = env.count("SELECT count(*) FROM users").await?;
    let log = logs.path().join("workers.log");
    // Handed back, the export needs no lease to run out: with an hour's lease, only the
    // hand-back lets the second worker have it within the test.
    let first = WorkerArgs {
        lease_secs: match stop {
            Stop::Kill => quick_worker().lease_secs,
            Stop::Terminate => 3600,
        },
        ..quick_worker()
    };
    let mut first = env.worker_command_with(WORKER, &log, &first)?;
    first.args(["--hold-after-parts", "2"]);
    let mut first = ChildProcess::spawn(first)?;
    let id = create(&client, &CreateUserExport::new(format)).await?;
    held(&log).await?;
    match stop {
        Stop::Kill => first.kill(),
        Stop::Terminate => {
            first.terminate()?;
            assert!(first.exited(FINISH).await?.success());
            let handed_back = client.get_export(&id).await?.into_inner();
            assert_eq!(handed_back.status, ExportStatus::Pending, "{handed_back:?}");
        }
    }
    let before = checkpoint(&env, id).await?;
    assert!(before.parts >= 2, "{before:?}");
    let extension = format!("attempt-1.{format}");
    assert!(before.key.ends_with(&extension), "{before:?}");
    assert!(client.get_export(&id).await?.into_inner().progress.rows_written >= before.rows);

    let _second = ChildProcess::spawn(env.worker_command(WORKER, &log)?)?;
    let done = done_with_progress_never_back(&client, id, &log).await?;
    assert_eq!(done.progress.rows_written, users);
    let resumed = logged(&log, "export resumed from its last checkpoint", id).ok_or_else(|| {
        anyhow::anyhow!(
            "not resumed:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?;
    assert_eq!(resumed["rows"], before.rows);
    let finished = logged_done(&log, id).await?;
    assert_eq!(finished["rows"], users);
    assert_eq!(
        finished["rows_read"],
        users - before.rows,
        "the resumed attempt read only the rows after the checkpoint"
    );
    let counted = match stop {
        Stop::Kill => 2,
        Stop::Terminate => 1,
    };
    assert_eq!(attempts(&env, id).await?, counted);
    // The file is the upload the first attempt began, completed; nothing else is left.
    assert_eq!(env.stored_for(id).await?, [before.key]);
    assert_eq!(env.unfinished_uploads()?, Vec::<String>::new());
    same_as_uninterrupted(&client, id, format).await?;
    env.finish().await
}

#[tokio::test]
async fn a_killed_workers_csv_export_resumes_from_its_last_part() -> anyhow::Result<()> {
    resumes_from_its_last_part(ExportFormat::Csv, Stop::Kill).await
}

#[tokio::test]
async fn a_killed_workers_json_lines_export_resumes_from_its_last_part() -> anyhow::Result<()> {
    resumes_from_its_last_part(ExportFormat::Jsonl, Stop::Kill).await
}

#[tokio::test]
async fn sigterm_hands_an_export_back_to_resume_at_once() -> anyhow::Result<()> {
    resumes_from_its_last_part(ExportFormat::Csv, Stop::Terminate).await
}

/// A CSV export whose first worker was killed once one part was recorded: the environment,
/// the export, its owner's client, the workers' log (in the directory returned) and the
/// checkpoint left.
async fn killed_after_one_part() -> anyhow::Result<(
    TestEnv,
    Uuid,
    exports_client::Client,
    tempfile::TempDir,
    Checkpointed,
)> {
    let (env, client, logs) = seeded().await?;
    let log = logs.path().join("workers.log");
    let mut first = env.worker_command(WORKER, &log)?;
    first.args(["--hold-after-parts", "1"]);
    let mut first = ChildProcess::spawn(first)?;
    let id = create(&client, &CreateUserExport::new(ExportFormat::Csv)).await?;
    held(&log).await?;
    first.kill();
    let before = checkpoint(&env, id).await?;
    Ok((env, id, client, logs, before))
}

#[tokio::test]
async fn a_checkpoint_whose_upload_vanished_starts_the_file_over() -> anyhow::Result<()> {
    let (env, id, client, logs, before) = killed_after_one_part().await?;
    let log = logs.path().join("workers.log");
    // The store lost the upload: aborted, or expired by a lifecycle rule.
    let s3 = env.s3.as_ref().unwrap().client()?;
    s3.abort_multipart(&Path::from(before.key.as_str()), &before.upload_id)
        .await?;

    let _second = ChildProcess::spawn(env.worker_command(WORKER, &log)?)?;
    let done = done_with_progress_never_back(&client, id, &log).await?;
    let users = env.count("SELECT count(*) FROM users").await?;
    assert_eq!(done.progress.rows_written, users);
    assert!(
        logged(
            &log,
            "the upload of the last checkpoint cannot be used; starting the file over",
            id
        )
        .is_some(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let finished = logged_done(&log, id).await?;
    assert_eq!(finished["rows_read"], users, "every row read again");
    assert_eq!(env.stored_for(id).await?, [format!("exports/{id}/attempt-2.csv")]);
    assert_eq!(env.unfinished_uploads()?, Vec::<String>::new());
    same_as_uninterrupted(&client, id, ExportFormat::Csv).await?;
    env.finish().await
}

#[tokio::test]
async fn a_stale_attempts_late_part_cannot_enter_the_resumed_file() -> anyhow::Result<()> {
    let (env, id, client, _logs, before) = killed_after_one_part().await?;
    // The resumed attempt holds once it has recorded a part of its own.
    let (release, released) = tokio::sync::watch::channel(false);
    let resuming = env
        .start_worker(WorkerArgs {
            hold_after_parts: Some(before.parts as u64 + 1),
            release_hold: Some(released),
            ..quick_worker()
        })
        .await?;
    until(FINISH, "the resumed attempt recorded a part", async || {
        Ok(attempts(&env, id).await? == 2 && checkpoint(&env, id).await?.parts > before.parts)
    })
    .await?;
    // The killed attempt's last part, arriving late (a network that held it): the part after
    // the checkpoint it was resumed from, with other bytes, after the resumed attempt's own.
    let stale_row = "stale,late,part\n";
    let stale = stale_row.repeat((6 << 20) / stale_row.len());
    let s3 = env.s3.as_ref().unwrap().client()?;
    s3.put_part(
        &Path::from(before.key.as_str()),
        &before.upload_id,
        before.parts,
        stale.into(),
    )
    .await?;
    release.send(true)?;

    let done = wait_for_export(&client, &id, FINISH, |e| e.status == ExportStatus::Done).await?;
    assert_eq!(
        done.progress.rows_written,
        env.count("SELECT count(*) FROM users").await?
    );
    // The object the store joined was not the parts recorded: deleted, and the file written
    // again from the start under the attempt's own name.
    assert_eq!(env.stored_for(id).await?, [format!("exports/{id}/attempt-2.csv")]);
    let (_, file) = download(&client, &id).await?;
    assert!(!String::from_utf8(file)?.contains(stale_row));
    same_as_uninterrupted(&client, id, ExportFormat::Csv).await?;
    resuming.shutdown(std::future::pending()).await;
    env.finish().await
}
