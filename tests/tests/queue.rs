//! The job stream against a real Redis: taking over a dead worker's job wherever it sits among
//! the live ones, and an idle worker waiting on it quietly.

use std::time::Duration;

use exports_client::types::{CreateUserExport, ExportFormat};
use exports_server::queue::{JobQueue, Lane, StaleScan, SMALL_EXPORT_ROWS};
use exports_tests::{create, ChildProcess, Setup, TestEnv, TestRedisPrefix};
use fred::prelude::*;
use uuid::Uuid;

#[tokio::test]
async fn a_stale_job_behind_many_live_ones_is_taken_over() -> anyhow::Result<()> {
    let keys = TestRedisPrefix::new();
    let server = exports_tests::redis()?;
    let redis = server.pool(2).await?;
    let queue = JobQueue::new(redis.clone(), &keys.prefix);
    queue.ensure_group().await?;
    let reader = server.dedicated(Duration::from_millis(100), false).await?;
    let mut exports = Vec::new();
    for _ in 0..40 {
        let id = Uuid::new_v4();
        queue.enqueue(id, SMALL_EXPORT_ROWS + 1).await?;
        exports.push(id);
    }
    // A worker took all 40 just now, but it died an hour ago holding the last one: Redis is
    // told that entry's idle time, so no clock is raced.
    let mut entries = Vec::new();
    for _ in 0..40 {
        let job = queue
            .read(&reader, "alive", Duration::from_millis(100))
            .await?
            .expect("a job");
        entries.push(job);
    }
    let _: Value = redis
        .xclaim(
            queue.stream_key(Lane::Bulk),
            format!("{}workers", keys.prefix),
            "alive",
            0,
            &entries[39].entry_id,
            Some(3_600_000),
            None,
            None,
            false,
            true,
        )
        .await?;
    let mut scan = StaleScan::default();
    let mut taken = None;
    // Redis looks at about ten pending entries per call: the cursor must carry on.
    for _ in 0..10 {
        if let Some(job) = queue
            .claim_stale("rescuer", Duration::from_secs(600), &mut scan)
            .await?
        {
            taken = Some(job);
            break;
        }
    }
    let taken = taken.expect("the stale job was found");
    assert_eq!(taken.entry_id, entries[39].entry_id);
    assert_eq!(taken.export_id, Some(exports[39]));
    Ok(())
}

const WORKER: &str = env!("CARGO_BIN_EXE_exports-server-under-test");

/// Polls the worker's log until `enough` holds, returning the log.
async fn log_until(
    log: &std::path::Path,
    what: &str,
    enough: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    // A generous bound for a slow machine, never what is tested.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if enough(&text) {
            return Ok(text);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{what}; the log:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const READ_TIMED_OUT: &str = "no new job within the read timeout";

#[tokio::test]
async fn an_idle_worker_waits_quietly_and_takes_a_new_job_at_once() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup::default()).await?;
    env.seed_users(10).await?;
    let logs = tempfile::tempdir()?;
    let log = logs.path().join("worker.log");
    let mut command = env.worker_command(WORKER, &log)?;
    command.env("RUST_LOG", "info,exports_server::worker=debug");
    let mut worker = ChildProcess::spawn(command)?;

    let idle = log_until(&log, "three read timeouts", |text| {
        text.matches(READ_TIMED_OUT).count() >= 3
    })
    .await?;
    assert!(
        !idle.contains("\"level\":\"WARN\"") && !idle.contains("\"level\":\"ERROR\""),
        "an idle worker is quiet:\n{idle}"
    );

    let alice = env.writer().await?;
    let timeouts_before = std::fs::read_to_string(&log)?.matches(READ_TIMED_OUT).count();
    let id = create(
        &env.client(&alice),
        &CreateUserExport {
            format: ExportFormat::Csv,
            filters: None,
            columns: None,
            compression: None,
        },
    )
    .await?;
    let taken = log_until(&log, "the job to be taken", |text| {
        text.contains(&format!("\"export_id\":\"{id}\"")) && text.contains("export started")
    })
    .await?;
    let started_at = taken.find("export started").unwrap();
    let timeouts_until_taken = taken[..started_at].matches(READ_TIMED_OUT).count() - timeouts_before;
    // The read under way when the job was queued returns it, or has just timed out and the next
    // one does: never a longer wait.
    assert!(
        timeouts_until_taken <= 1,
        "{timeouts_until_taken} read timeouts:\n{taken}"
    );
    worker.kill(); // before the test's Redis keys go: a live worker would make its stream again
    env.finish().await
}

#[tokio::test]
async fn a_small_export_queued_behind_big_ones_of_other_users_is_taken_first() -> anyhow::Result<()> {
    use exports_client::types::{ExportStatus, UserExportFilters, UserStatus};
    let env = TestEnv::start_setup(Setup::default()).await?;
    // Every user matches a big export; every fourth is inactive, so few enough for a small one.
    let users = SMALL_EXPORT_ROWS as i64 + 10_000;
    env.seed_users(users).await?;
    let mut big = Vec::new();
    for _ in 0..2 {
        let user = env.writer().await?;
        let client = env.client(&user);
        for _ in 0..2 {
            big.push(create(&client, &CreateUserExport::new(ExportFormat::Csv)).await?);
        }
    }
    let alice = env.writer().await?;
    let alice_client = env.client(&alice);
    let inactive = CreateUserExport::new(ExportFormat::Csv).with_filters(UserExportFilters {
        created_after: None,
        status: Some(UserStatus::Inactive),
    });
    let small = create(&alice_client, &inactive).await?;
    let queued = env.queued_jobs().await?;
    assert_eq!(queued.len(), 5);
    assert_eq!(queued[0].1, small.to_string(), "the small lane's, listed first");
    assert!(big
        .iter()
        .all(|id| queued[1..].iter().any(|(_, queued)| *queued == id.to_string())));

    // One worker with one slot: the order it starts them in is the order it took them.
    let worker = env
        .start_worker(exports_server::worker::WorkerArgs {
            concurrency: 1,
            ..exports_tests::quick_worker()
        })
        .await?;
    exports_tests::until(Duration::from_secs(120), "every export done", async || {
        let done = env
            .count("SELECT count(*) FROM exports WHERE status = 'done'")
            .await?;
        Ok(done == 5)
    })
    .await?;
    drop(worker);
    let first: Uuid = env
        .pool
        .get()
        .await?
        .query_one("SELECT id FROM exports ORDER BY started_at LIMIT 1", &[])
        .await?
        .get(0);
    assert_eq!(
        first, small,
        "the small export was taken before the four queued before it"
    );
    let export = alice_client.get_export(&small).await?.into_inner();
    assert_eq!(export.status, ExportStatus::Done);
    env.finish().await
}

#[tokio::test]
async fn a_user_with_an_export_running_waits_while_another_user_has_none() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup::default()).await?;
    env.seed_users(100).await?;
    let (ann, bob) = (env.writer().await?, env.writer().await?);
    let mut anns = Vec::new();
    for _ in 0..3 {
        anns.push(create(&env.client(&ann), &CreateUserExport::new(ExportFormat::Csv)).await?);
    }
    let bobs = create(&env.client(&bob), &CreateUserExport::new(ExportFormat::Csv)).await?;

    // Two slots, and every export holds once it has written its rows until released: what
    // runs first stays running, however fast the machine.
    let (release, released) = tokio::sync::watch::channel(false);
    let worker = env
        .start_worker(exports_server::worker::WorkerArgs {
            concurrency: 2,
            hold_after_rows: Some(1),
            release_hold: Some(released),
            ..exports_tests::quick_worker()
        })
        .await?;
    let running = async || -> anyhow::Result<Vec<Uuid>> {
        let rows = env
            .pool
            .get()
            .await?
            .query(
                "SELECT id FROM exports WHERE status = 'processing' ORDER BY started_at",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    };
    exports_tests::until(Duration::from_secs(60), "two exports running", async || {
        Ok(running().await?.len() == 2)
    })
    .await?;
    // Ann's other exports came before Bob's, but Bob had none running: his was taken.
    let running = running().await?;
    assert!(running.contains(&bobs), "{running:?}");
    assert_eq!(
        running.iter().filter(|id| anns.contains(id)).count(),
        1,
        "{running:?}"
    );
    let waiting = env
        .count("SELECT count(*) FROM exports WHERE status = 'pending' AND attempts = 0")
        .await?;
    assert_eq!(waiting, 2, "Ann's other two wait, their attempts not counted");

    release.send(true)?;
    exports_tests::until(Duration::from_secs(60), "every export done", async || {
        Ok(env
            .count("SELECT count(*) FROM exports WHERE status = 'done'")
            .await?
            == 4)
    })
    .await?;
    drop(worker);
    env.finish().await
}
