//! `cargo xtask bench fairness`: a backlog of big exports from many users (by default 50 users
//! queueing 3 exports of every one of 200,000 users), then small exports (1,000 users) from
//! another user, one after another, through the release API and worker processes (2, one job
//! each). Each small export is timed from its create to the poll that sees it `done`, and the
//! backlog from its first create to its last export done. The same run is made with the
//! workers first in, first out (`--fifo`, the queue before lanes and deferral) and with their
//! scheduling, each on a database of its own. The last line is one JSON object with the
//! figures; the command fails when a request got an unexpected answer or an export failed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use crate::bench::{
    api_listening, create_export, issue_keys, poll_until_stopped, release_server, wait_until_ready, Sandbox,
    REDIS_URL,
};
use exports_server::db::users;
use exports_tests::ChildProcess;

pub struct FairnessBenchOptions {
    pub users: usize,
    pub exports_per_user: usize,
    pub rows: i64,
    pub small: usize,
    pub workers: usize,
}

/// Targets: the small exports' p99 from create to done, and the backlog's time against FIFO's.
const SMALL_P99_TARGET_SECONDS: f64 = 2.0;
const BACKLOG_VS_FIFO_TARGET: f64 = 1.05;
/// The small exports' users: those created on or after this day, of which there are exactly
/// `SMALL_ROWS` (`seed`).
const SMALL_ROWS: i64 = 1_000;
const SMALL_BODY: &str = r#"{"format":"csv","filters":{"created_after":"2030-01-01"}}"#;
const BIG_BODY: &str = r#"{"format":"csv"}"#;

pub fn run(root: &Path, options: FairnessBenchOptions) -> Result<ExitCode> {
    let binary = release_server(root)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut figures = serde_json::Map::new();
        let mut failures = 0;
        for (mode, fifo) in [("fifo", true), ("fair", false)] {
            let outcome = one_mode(&binary, &options, fifo).await?;
            failures += outcome.failures;
            println!(
                "{mode}: backlog of {} exports in {:.2} s; small exports from create to done: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
                options.users * options.exports_per_user,
                outcome.backlog_seconds,
                percentile(&outcome.small_seconds, 0.5),
                percentile(&outcome.small_seconds, 0.99),
                percentile(&outcome.small_seconds, 1.0),
            );
            figures.insert(format!("{mode}_backlog_seconds"), json!(round(outcome.backlog_seconds)));
            for (name, at) in [("p50", 0.5), ("p99", 0.99)] {
                figures.insert(
                    format!("{mode}_small_{name}_seconds"),
                    json!(round(percentile(&outcome.small_seconds, at))),
                );
            }
        }
        let fair = |name: &str| figures[name].as_f64().unwrap_or(f64::NAN);
        let p99 = fair("fair_small_p99_seconds");
        let backlog_vs_fifo = fair("fair_backlog_seconds") / fair("fifo_backlog_seconds");
        println!(
            "targets: small exports' p99 at most {SMALL_P99_TARGET_SECONDS} s: {p99:.2} s ({}); backlog at most {BACKLOG_VS_FIFO_TARGET}x FIFO's: {backlog_vs_fifo:.3}x ({}); unexpected answers: {failures}",
            verdict(p99 <= SMALL_P99_TARGET_SECONDS),
            verdict(backlog_vs_fifo <= BACKLOG_VS_FIFO_TARGET),
        );
        figures.insert("backlog_vs_fifo".into(), json!((backlog_vs_fifo * 1000.0).round() / 1000.0));
        figures.insert("users".into(), json!(options.users));
        figures.insert("exports_per_user".into(), json!(options.exports_per_user));
        figures.insert("rows".into(), json!(options.rows));
        figures.insert("small_exports".into(), json!(options.small));
        figures.insert("workers".into(), json!(options.workers));
        figures.insert("unexpected_answers".into(), json!(failures));
        println!("{}", serde_json::Value::Object(figures));
        Ok(if failures == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

struct Outcome {
    backlog_seconds: f64,
    small_seconds: Vec<f64>,
    /// Creates not answered `202`, and exports that did not end `done`.
    failures: u64,
}

async fn one_mode(binary: &Path, options: &FairnessBenchOptions, fifo: bool) -> Result<Outcome> {
    let sandbox = Sandbox::new();
    let Sandbox {
        database_url,
        redis_prefix,
        ..
    } = &sandbox;
    let files = tempfile::tempdir()?;
    let result = async {
        let postgres = sandbox.migrated().await?;
        let pool = postgres.pool(4)?;
        // `rows` users, one a minute up to 1,000 minutes past midnight on 1 January 2030: the
        // last `SMALL_ROWS` of them are the small exports'.
        let newest = chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")?.to_utc()
            + chrono::Duration::minutes(SMALL_ROWS + 1);
        users::seed_demo_users_until(&*pool.get().await?, options.rows, newest).await?;
        pool.get().await?.batch_execute("VACUUM ANALYZE users").await?;
        let keys = issue_keys(&pool, options.users + 1).await?;

        let storage = files.path().to_str().context("a UTF-8 path")?.to_string();
        let common = |command: &mut Command| {
            command
                .args(["--storage-dir", &storage])
                .args(["--redis-prefix", redis_prefix, "--redis-url", REDIS_URL])
                .env("RUST_LOG", "info")
                .stderr(Stdio::null());
        };
        let mut api = Command::new(binary);
        api.args(["--database-url", database_url, "serve", "--listen", "127.0.0.1:0"]);
        common(&mut api);
        let (_api, (addr, _)) = ChildProcess::start_listening(&mut api, "the API", api_listening)?;
        wait_until_ready(addr, "/health/ready", 10).await?;
        let mut workers = Vec::new();
        for _ in 0..options.workers {
            let mut worker = Command::new(binary);
            worker.args(["--database-url", database_url, "work", "--concurrency", "1"]);
            if fifo {
                worker.arg("--fifo");
            }
            common(&mut worker);
            worker.stdout(Stdio::null());
            workers.push(ChildProcess(worker.spawn().context("starting a worker")?));
        }

        let mut failures = 0;
        let started = Instant::now();
        let mut backlog = Vec::new();
        for key in &keys[..options.users] {
            for _ in 0..options.exports_per_user {
                match create(addr, key, BIG_BODY).await? {
                    Some(id) => backlog.push((key.clone(), id)),
                    None => failures += 1,
                }
            }
        }
        let small_key = &keys[options.users];
        let smalls = async {
            let mut seconds = Vec::new();
            let mut failed = 0;
            for _ in 0..options.small {
                let created = Instant::now();
                let Some(id) = create(addr, small_key, SMALL_BODY).await? else {
                    failed += 1;
                    continue;
                };
                if !done(addr, small_key, &id).await? {
                    failed += 1;
                }
                seconds.push(created.elapsed().as_secs_f64());
            }
            anyhow::Ok((seconds, failed))
        };
        let backlog_done = async {
            let mut failed = 0;
            for (key, id) in &backlog {
                if !done(addr, key, id).await? {
                    failed += 1;
                }
            }
            anyhow::Ok((started.elapsed().as_secs_f64(), failed))
        };
        let ((small_seconds, small_failed), (backlog_seconds, backlog_failed)) =
            tokio::try_join!(smalls, backlog_done)?;
        drop(workers);
        Ok(Outcome {
            backlog_seconds,
            small_seconds,
            failures: failures + small_failed + backlog_failed,
        })
    }
    .await;
    sandbox.cleanup().await;
    result
}

/// The new export's id, or None when the create was not answered `202`.
async fn create(addr: SocketAddr, key: &str, body: &'static str) -> Result<Option<String>> {
    Ok(match create_export(addr, key, body).await? {
        Ok(id) => Some(id),
        Err((status, answer)) => {
            println!("create answered {status}: {answer}");
            None
        }
    })
}

/// Whether the export ended `done`.
async fn done(addr: SocketAddr, key: &str, id: &str) -> Result<bool> {
    let export = poll_until_stopped(addr, key, id).await?;
    let done = export["status"] == "done";
    if !done {
        println!("export {id} stopped: {export}");
    }
    Ok(done)
}

/// The value below which `at` of them lie (nearest rank; NaN for none).
fn percentile(values: &[f64], at: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((at * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 10.0);
        assert_eq!(percentile(&values, 0.99), 20.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
