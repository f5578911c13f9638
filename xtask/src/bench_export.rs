//! `cargo xtask bench export`: exports of a large users table end to end through the release
//! binaries (API, Redis queue, worker process, S3 upload to s3s-fs, `done`), beside
//! PostgreSQL's own `COPY (the same query) TO STDOUT (FORMAT csv)` in the same run, alone and
//! piped by psql into `aws s3 cp -` to the same s3s-fs (what a user would otherwise do), with
//! the worker's peak RSS. Each kind of file (CSV, XLSX, JSON Lines, gzipped CSV, CSV of the
//! email column alone) gets its own worker process. The last line is one JSON object with the
//! figures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use serde_json::json;

use crate::bench::{
    api_listening, create_export, issue_keys, poll_until_stopped, release_server, wait_until_ready, Sandbox,
    REDIS_URL,
};
use exports_server::db::users;
use exports_server::db::users::UserQuery;
use exports_server::model::{UserColumn, UserExportFilters};
use exports_tests::{s3s_fs_listening, ChildProcess};

pub struct ExportBenchOptions {
    pub users: i64,
    pub runs: usize,
    /// The share of rows checkpointed at which an export's worker gets SIGTERM; 0 for none.
    pub interrupt_at: f64,
}

const ACCESS_KEY: &str = "exports-bench";
const SECRET_KEY: &str = "exports-bench-secret";
const BUCKET: &str = "exports-bench";
const AWSCLI_VERSION: &str = "1.46.3";
/// Target: the CSV export takes at most this share of the pipe's time.
const CSV_VS_PIPE_TARGET: f64 = 0.8;
/// Target: gzipped CSV writes at least this share of plain CSV's rows per second.
const GZIP_VS_CSV_TARGET: f64 = 0.6;
/// Target: a CSV export interrupted part-way takes at most this multiple of an uninterrupted
/// one's time, from its create to `done`.
const INTERRUPTED_VS_CSV_TARGET: f64 = 1.1;

/// The kinds of file timed: a name for the figures, and the create's body.
const KINDS: [(&str, &str); 5] = [
    ("csv", r#"{"format":"csv"}"#),
    ("xlsx", r#"{"format":"xlsx"}"#),
    ("jsonl", r#"{"format":"jsonl"}"#),
    ("csv_gzip", r#"{"format":"csv","compression":"gzip"}"#),
    ("csv_email", r#"{"format":"csv","columns":["email"]}"#),
];

pub fn run(root: &Path, options: ExportBenchOptions) -> Result<()> {
    let binary = release_server(root)?;
    let s3s = exports_tests::s3s_fs_binary();
    anyhow::ensure!(s3s.exists(), "{} is missing: run scripts/tools.sh", s3s.display());
    let aws = aws_cli()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(&binary, &s3s, &aws, options))
}

/// `~/.cache/exports`, where the scripts keep the tools they install.
fn tools_cache() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/exports")
}

/// The AWS CLI (awscli from PyPI), installed on first use into a virtualenv of its own, as
/// scripts/validate-spec.sh installs its validator.
fn aws_cli() -> Result<PathBuf> {
    let venv = std::env::var_os("EXPORTS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(tools_cache)
        .join("awscli");
    let aws = venv.join("bin/aws");
    if !aws.exists() {
        println!(
            "installing awscli {AWSCLI_VERSION} from PyPI into {} ...",
            venv.display()
        );
        let created = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
        anyhow::ensure!(
            created.context("running python3")?.success(),
            "python3 -m venv failed"
        );
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", &format!("awscli=={AWSCLI_VERSION}")])
            .status()
            .context("running pip")?;
        anyhow::ensure!(
            installed.success() && aws.exists(),
            "pip could not install awscli"
        );
    }
    Ok(aws)
}

async fn bench(binary: &Path, s3s: &Path, aws: &Path, options: ExportBenchOptions) -> Result<()> {
    let sandbox = Sandbox::new();
    let Sandbox {
        database_url,
        redis_prefix,
        ..
    } = &sandbox;
    let redis_url = REDIS_URL;
    let files = tempfile::tempdir()?;

    let result = async {
        let postgres = sandbox.migrated().await?;
        let pool = postgres.pool(4)?;
        let client = pool.get().await?;
        let seeding = Instant::now();
        users::seed_demo_users(&client, options.users).await?;
        client.batch_execute("VACUUM ANALYZE users").await?;
        println!("seeded {} users in {:.1} s", options.users, seeding.elapsed().as_secs_f64());
        let key = issue_keys(&pool, 1).await?.pop().context("a key")?;
        let rows = client.query_one("SELECT count(*) FROM users", &[]).await?.get::<_, i64>(0) as u64;

        // The S3-compatible server, the API and (per format) a fresh worker process.
        std::fs::create_dir(files.path().join(BUCKET))?;
        let (s3, s3_addr) = ChildProcess::start_listening(
            Command::new(s3s)
                .args(["--host", "127.0.0.1", "--port", "0"])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(files.path())
                .env("RUST_LOG", "s3s_fs=info")
                .stderr(Stdio::null()),
            "s3s-fs",
            s3s_fs_listening,
        )?;
        let s3_endpoint = format!("http://{s3_addr}");
        let s3_args = |command: &mut Command| {
            command
                .args(["--s3-bucket", BUCKET, "--s3-path-style"])
                .args(["--s3-endpoint", &s3_endpoint])
                .args(["--s3-access-key-id", ACCESS_KEY])
                .env("EXPORTS_S3_SECRET_ACCESS_KEY", SECRET_KEY)
                .args(["--redis-prefix", redis_prefix, "--redis-url", redis_url]);
        };
        let mut api = Command::new(binary);
        api.args(["--database-url", database_url, "serve", "--listen", "127.0.0.1:0"]);
        s3_args(&mut api);
        // `info`: the line that says where the API listens.
        api.env("RUST_LOG", "info");
        let (_api, (addr, _)) = ChildProcess::start_listening(&mut api, "the API", api_listening)?;
        wait_until_ready(addr, "/health/ready", 10).await?;

        // Each format gets a fresh worker process (its peak RSS is that format's) and `runs`
        // exports; each CSV export runs right after a COPY and the same COPY piped into the AWS
        // CLI, so all three see the same machine.
        let mut figures = serde_json::Map::new();
        let (mut copy_seconds, mut pipe_seconds) = (Vec::new(), Vec::new());
        let mut first = true;
        for (format, body) in KINDS {
            let mut worker = Command::new(binary);
            worker.args(["--database-url", database_url, "work", "--concurrency", "1"]);
            s3_args(&mut worker);
            // Its log says how long each upload took to complete after the last row.
            let worker_log = files.path().join(format!("worker-{format}.log"));
            worker.env("RUST_LOG", "info").stdout(std::fs::File::create(&worker_log)?);
            let worker = ChildProcess(worker.spawn().context("starting the worker")?);
            // Connected to PostgreSQL, Redis and S3 before the clock starts, however long that takes.
            wait_for_log_line(&worker_log, "worker started").await?;
            if std::mem::take(&mut first) {
                // Untimed: the first export after start-up pays one-off costs (about 0.6 s
                // here) that a service in use has behind it.
                let (took, _) = export_end_to_end(addr, &key, warm_up_body()).await?;
                println!("warm-up: a CSV export of the users of the last 60 days: {took:.2} s");
            }
            // CPU is counted over the timed exports only: not the warm-up, not the pipes' uploads.
            let worker_cpu = cpu_seconds(worker.0.id())?;
            let mut s3_cpu = 0.0;
            let mut seconds = Vec::new();
            let mut size = 0;
            for run in 1..=options.runs.max(1) {
                if format == "csv" {
                    let (copy, bytes) = time_copy(&client).await?;
                    println!("run {run}: COPY (same query) TO STDOUT (FORMAT csv): {copy:.2} s ({:.1} MiB)", bytes as f64 / 1048576.0);
                    copy_seconds.push(copy);
                    let object = format!("s3://{BUCKET}/pipe/run-{run}.csv");
                    let pipe = tokio::task::block_in_place(|| time_pipe(database_url, aws, &s3_endpoint, &object))?;
                    println!("run {run}: the same COPY through psql, piped into `aws s3 cp -`: {pipe:.2} s");
                    pipe_seconds.push(pipe);
                }
                let s3_cpu_before = cpu_seconds(s3.0.id())?;
                let (took, bytes) = export_end_to_end(addr, &key, body).await?;
                s3_cpu += cpu_seconds(s3.0.id())? - s3_cpu_before;
                println!("run {run}: {format} end to end: {took:.2} s ({:.0} rows/s)", rows as f64 / took);
                seconds.push(took);
                size = bytes;
            }
            let peak_rss = peak_rss_mib(worker.0.id())?;
            let runs = seconds.len() as f64;
            let worker_cpu = (cpu_seconds(worker.0.id())? - worker_cpu) / runs;
            let s3_cpu = s3_cpu / runs;
            drop(worker);
            let seconds = median(&mut seconds);
            let mut completing = completing_seconds(&worker_log)?;
            // The warm-up is the first line of the CSV worker's log; the runs are the last ones.
            let timed = completing.len().saturating_sub(options.runs.max(1));
            let completing = median(&mut completing[timed..]);
            println!(
                "{format}: of which completing the upload after the last row (last part, and the store assembling the object): {completing:.2} s (median)"
            );
            figures.insert(format!("{format}_upload_completion_seconds"), json!(round(completing, 3)));
            println!(
                "{format}: {rows} rows end to end in {seconds:.2} s (median; {:.0} rows/s, {:.1} MiB file), worker peak RSS {peak_rss:.1} MiB, CPU per export: worker {worker_cpu:.2} s, s3s-fs {s3_cpu:.2} s",
                rows as f64 / seconds,
                size as f64 / 1048576.0
            );
            figures.insert(format!("{format}_seconds"), json!(round(seconds, 3)));
            figures.insert(format!("{format}_rows_per_second"), json!((rows as f64 / seconds).round()));
            figures.insert(format!("{format}_file_mib"), json!(round(size as f64 / 1048576.0, 1)));
            figures.insert(format!("{format}_file_bytes"), json!(size));
            figures.insert(format!("{format}_worker_peak_rss_mib"), json!(round(peak_rss, 1)));
            figures.insert(format!("{format}_worker_cpu_seconds"), json!(round(worker_cpu, 2)));
            figures.insert(format!("{format}_s3_server_cpu_seconds"), json!(round(s3_cpu, 2)));
        }
        if options.interrupt_at > 0.0 {
            let worker = |log: &Path| -> Result<ChildProcess> {
                let mut worker = Command::new(binary);
                // No grace: the running export is handed back at once, with its checkpoint.
                worker.args(["--database-url", database_url, "work", "--concurrency", "1", "--job-grace-secs", "0"]);
                s3_args(&mut worker);
                worker.env("RUST_LOG", "info").stdout(std::fs::File::create(log)?);
                Ok(ChildProcess(worker.spawn().context("starting a worker")?))
            };
            let mut seconds = Vec::new();
            let mut resumed_at = Vec::new();
            // Two workers; the one stopped in a run is replaced for the next.
            let mut workers: Vec<(ChildProcess, PathBuf)> = Vec::new();
            for run in 1..=options.runs.max(1) {
                while workers.len() < 2 {
                    let log = files.path().join(format!("worker-interrupted-{run}-{}.log", workers.len()));
                    workers.push((worker(&log)?, log));
                }
                for (_, log) in &workers {
                    wait_for_log_line(log, "worker started").await?;
                }
                // Untimed, as the warm-up before the other exports: one export on each worker
                // (two at once, one job each), so that neither attempt pays a new process's
                // first-export costs, as a deploy's surviving workers do not.
                let warm = futures::future::try_join(
                    export_end_to_end(addr, &key, warm_up_body()),
                    export_end_to_end(addr, &key, warm_up_body()),
                );
                warm.await?;
                let interrupted =
                    export_interrupted(addr, &key, &client, &mut workers, options.interrupt_at, rows).await?;
                println!(
                    "run {run}: csv interrupted once {:.0}% of its rows were checkpointed (SIGTERM; handed back {:.3} s later, {:.3} s after the attempt started; resumed {:.3} s after that by another worker, whose attempt took {:.3} s), from row {} ({:.0}%), the second attempt reading {} rows: {:.2} s end to end",
                    options.interrupt_at * 100.0,
                    interrupted.handing_back,
                    interrupted.first_attempt,
                    interrupted.taking,
                    interrupted.second_attempt,
                    interrupted.resumed_at,
                    interrupted.resumed_at as f64 * 100.0 / rows as f64,
                    interrupted.rows_read,
                    interrupted.seconds
                );
                seconds.push(interrupted.seconds);
                resumed_at.push(interrupted.resumed_at as f64 / rows as f64);
            }
            let seconds = median(&mut seconds);
            let vs_csv = seconds / figures["csv_seconds"].as_f64().unwrap_or(f64::NAN);
            println!(
                "target: a CSV export interrupted at {:.0}% at most {INTERRUPTED_VS_CSV_TARGET}x an uninterrupted one's time: {seconds:.2} s (median), {vs_csv:.2}x ({})",
                options.interrupt_at * 100.0,
                verdict(vs_csv <= INTERRUPTED_VS_CSV_TARGET)
            );
            figures.insert("csv_interrupt_at".into(), json!(options.interrupt_at));
            figures.insert("csv_interrupted_seconds".into(), json!(round(seconds, 3)));
            figures.insert("csv_interrupted_resumed_at".into(), json!(round(median(&mut resumed_at), 3)));
            figures.insert("csv_interrupted_vs_csv".into(), json!(round(vs_csv, 3)));
            figures.insert("csv_interrupted_vs_csv_target".into(), json!(INTERRUPTED_VS_CSV_TARGET));
            figures.insert("csv_interrupted_vs_csv_met".into(), json!(vs_csv <= INTERRUPTED_VS_CSV_TARGET));
        }
        let copy = median(&mut copy_seconds);
        let pipe = median(&mut pipe_seconds);
        let csv = figures["csv_seconds"].as_f64().unwrap_or(f64::MAX);
        let (csv_vs_copy, csv_vs_pipe) = (csv / copy, csv / pipe);
        let figure = |name: &str| figures[name].as_f64().unwrap_or(f64::NAN);
        let xlsx_rate = figure("xlsx_rows_per_second");
        let peak = KINDS
            .iter()
            .map(|(kind, _)| figures[&format!("{kind}_worker_peak_rss_mib")].as_f64().unwrap_or(f64::MAX))
            .fold(0.0, f64::max);
        // JSON Lines at least as fast as CSV; gzipped CSV at least 0.6 of it; the email
        // column alone faster than every column by at least the share of bytes it skips.
        let jsonl_vs_csv = figure("jsonl_rows_per_second") / figure("csv_rows_per_second");
        let gzip_vs_csv = figure("csv_gzip_rows_per_second") / figure("csv_rows_per_second");
        let gzip_ratio = figure("csv_file_bytes") / figure("csv_gzip_file_bytes");
        // "Faster by the share of bytes it skips": its rows/s gain at least that share.
        let email_bytes_skipped = 1.0 - figure("csv_email_file_bytes") / figure("csv_file_bytes");
        let email_speedup = figure("csv_email_rows_per_second") / figure("csv_rows_per_second");
        let email_time_share = figure("csv_email_seconds") / figure("csv_seconds");
        println!("COPY: {copy:.2} s (median; {:.0} rows/s)", rows as f64 / copy);
        println!("COPY piped into `aws s3 cp -`: {pipe:.2} s (median; {:.0} rows/s)", rows as f64 / pipe);
        println!(
            "targets: CSV at most {CSV_VS_PIPE_TARGET}x the pipe: {csv_vs_pipe:.2}x ({}); CSV within 1.3x of COPY: {csv_vs_copy:.2}x ({}); XLSX >= 100,000 rows/s: {xlsx_rate:.0} ({}); worker peak RSS < 64 MiB: {peak:.1} ({})",
            verdict(csv_vs_pipe <= CSV_VS_PIPE_TARGET),
            verdict(csv_vs_copy <= 1.3),
            verdict(xlsx_rate >= 100_000.0),
            verdict(peak < 64.0)
        );
        println!(
            "targets: JSON Lines >= CSV's rows/s: {jsonl_vs_csv:.2}x ({}); gzipped CSV >= {GZIP_VS_CSV_TARGET}x CSV's rows/s: {gzip_vs_csv:.2}x ({}), compression ratio {gzip_ratio:.2}; the email column alone skips {:.0}% of the bytes and writes {email_speedup:.2}x the rows/s, faster by {:.0}% ({}; it takes {:.0}% of the full export's time)",
            verdict(jsonl_vs_csv >= 1.0),
            verdict(gzip_vs_csv >= GZIP_VS_CSV_TARGET),
            email_bytes_skipped * 100.0,
            (email_speedup - 1.0) * 100.0,
            verdict(email_speedup - 1.0 >= email_bytes_skipped),
            email_time_share * 100.0
        );
        figures.insert("jsonl_vs_csv".into(), json!(round(jsonl_vs_csv, 3)));
        figures.insert("csv_gzip_vs_csv".into(), json!(round(gzip_vs_csv, 3)));
        figures.insert("csv_gzip_compression_ratio".into(), json!(round(gzip_ratio, 2)));
        figures.insert("csv_email_bytes_skipped".into(), json!(round(email_bytes_skipped, 3)));
        figures.insert("csv_email_vs_csv".into(), json!(round(email_speedup, 3)));
        figures.insert("csv_email_time_share".into(), json!(round(email_time_share, 3)));
        figures.insert("runs".into(), json!(options.runs.max(1)));
        figures.insert("copy_seconds".into(), json!(round(copy, 3)));
        figures.insert("copy_rows_per_second".into(), json!((rows as f64 / copy).round()));
        figures.insert("csv_vs_copy".into(), json!(round(csv_vs_copy, 3)));
        figures.insert("pipe_seconds".into(), json!(round(pipe, 3)));
        figures.insert("csv_vs_pipe".into(), json!(round(csv_vs_pipe, 3)));
        figures.insert("csv_vs_pipe_target".into(), json!(CSV_VS_PIPE_TARGET));
        figures.insert("csv_vs_pipe_met".into(), json!(csv_vs_pipe <= CSV_VS_PIPE_TARGET));
        figures.insert("rows".into(), json!(rows));
        println!("{}", serde_json::Value::Object(figures));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    sandbox.cleanup().await;
    result
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// The middle value (NaN for none).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// PostgreSQL's own CSV of the export's query (no filters): seconds and bytes.
async fn time_copy(client: &tokio_postgres::Client) -> Result<(f64, u64)> {
    let query = UserQuery::new(&UserExportFilters::default());
    let started = Instant::now();
    let stream = client
        .copy_out(&format!(
            "COPY ({}) TO STDOUT (FORMAT csv, HEADER)",
            query.select_sql(&UserColumn::ALL)
        ))
        .await?;
    let bytes = stream
        .try_fold(0u64, |total, chunk| async move { Ok(total + chunk.len() as u64) })
        .await?;
    Ok((started.elapsed().as_secs_f64(), bytes))
}

/// What a user would otherwise do: the same COPY through psql, piped into a streaming
/// multipart upload by the AWS CLI (8 MiB parts, its default, as the worker's) to `object` on
/// the same S3 server. Seconds, from starting both to both having exited.
fn time_pipe(database_url: &str, aws: &Path, endpoint: &str, object: &str) -> Result<f64> {
    let query = UserQuery::new(&UserExportFilters::default());
    let started = Instant::now();
    let mut psql = ChildProcess(
        Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", database_url, "-c"])
            .arg(format!(
                "COPY ({}) TO STDOUT (FORMAT csv, HEADER)",
                query.select_sql(&UserColumn::ALL)
            ))
            .stdout(Stdio::piped())
            .spawn()
            .context("starting psql")?,
    );
    let csv = psql.0.stdout.take().context("psql stdout")?;
    let mut upload = ChildProcess(
        Command::new(aws)
            .args([
                "s3",
                "cp",
                "-",
                object,
                "--endpoint-url",
                endpoint,
                "--only-show-errors",
            ])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            // No profile or credentials of the machine's user in the way.
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .stdin(csv)
            .spawn()
            .context("starting the AWS CLI")?,
    );
    let (copied, uploaded) = (psql.0.wait()?, upload.0.wait()?);
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        copied.success() && uploaded.success(),
        "psql | aws s3 cp - failed: psql {copied}, aws {uploaded}"
    );
    Ok(seconds)
}

/// The warm-up export's body: the users of the last 60 days (one a minute, about 86,000).
fn warm_up_body() -> &'static str {
    let since = (chrono::Utc::now() - chrono::Duration::days(60)).date_naive();
    // Built once per run; the request builder takes static bodies.
    Box::leak(format!(r#"{{"format":"csv","filters":{{"created_after":"{since}"}}}}"#).into_boxed_str())
}

/// From the POST of `body` to the poll that sees `done`: seconds, and the file's size.
async fn export_end_to_end(addr: SocketAddr, key: &str, body: &'static str) -> Result<(f64, u64)> {
    let started = Instant::now();
    let id = create_export(addr, key, body)
        .await?
        .map_err(|(status, answer)| anyhow::anyhow!("creating the export: {status} {answer}"))?;
    let export = poll_until_stopped(addr, key, &id).await?;
    anyhow::ensure!(export["status"] == "done", "the export did not finish: {export}");
    Ok((
        started.elapsed().as_secs_f64(),
        export["file_size_bytes"].as_u64().unwrap_or(0),
    ))
}

/// One interrupted export: its time from create to `done`, the row its second attempt went
/// on from, the rows that attempt read, and where the time between the two attempts went.
struct Interrupted {
    seconds: f64,
    resumed_at: u64,
    rows_read: u64,
    /// From SIGTERM to the export handed back (the parts in flight, the row, the queue).
    handing_back: f64,
    /// From the hand-back to the other worker starting the export.
    taking: f64,
    /// The first attempt, from its start to its hand-back, and the second, to its end.
    first_attempt: f64,
    second_attempt: f64,
}

/// A CSV export of every user, on two idle worker processes: whichever takes it gets SIGTERM
/// once `at` of the rows are checkpointed (as a rolling deploy would stop it), and the other
/// goes on from the checkpoint it hands back. The one stopped leaves `workers`.
async fn export_interrupted(
    addr: SocketAddr,
    key: &str,
    client: &tokio_postgres::Client,
    workers: &mut Vec<(ChildProcess, PathBuf)>,
    at: f64,
    rows: u64,
) -> Result<Interrupted> {
    let logs = [workers[0].1.clone(), workers[1].1.clone()];
    let started = Instant::now();
    let id = create_export(addr, key, r#"{"format":"csv"}"#)
        .await?
        .map_err(|(status, answer)| anyhow::anyhow!("creating the export: {status} {answer}"))?;
    let export_id: uuid::Uuid = id.parse()?;
    // Polled on a connection of its own; each part's checkpoint is in the row as the part
    // completes.
    let deadline = Instant::now() + Duration::from_secs(600);
    let checkpointed = (at * rows as f64) as i64;
    loop {
        let row = client
            .query_one(
                "SELECT (checkpoint->>'rows')::bigint, status FROM exports WHERE id = $1",
                &[&export_id],
            )
            .await?;
        if row.get::<_, Option<i64>>(0).unwrap_or(0) >= checkpointed {
            break;
        }
        let status: String = row.get(1);
        anyhow::ensure!(
            status == "pending" || status == "processing",
            "the export ended ({status}) before {:.0}% of it was checkpointed",
            at * 100.0
        );
        anyhow::ensure!(Instant::now() < deadline, "no checkpoint past {:.0}%", at * 100.0);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let running = (0..2)
        .find(|&n| {
            std::fs::read_to_string(&logs[n])
                .unwrap_or_default()
                .lines()
                .any(|line| line.contains("export started") && line.contains(&id))
        })
        .context("no worker says it started the export")?;
    let signalled = chrono::Utc::now();
    workers[running].0.terminate()?;
    let export = poll_until_stopped(addr, key, &id).await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        export["status"] == "done",
        "the interrupted export did not finish: {export}"
    );
    let other = &logs[1 - running];
    let record = |log: &Path, message: &str| -> Option<serde_json::Value> {
        std::fs::read_to_string(log)
            .ok()?
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|record| record["message"] == message && record["export_id"] == id)
    };
    // Logged just after the row says done, which the poll may see first.
    let deadline = Instant::now() + Duration::from_secs(60);
    while record(other, "export done").is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed = record(other, "export resumed from its last checkpoint")
        .context("the second worker did not resume the export")?;
    let done = record(other, "export done").context("the second worker did not finish the export")?;
    let handed_back = record(&logs[running], "export handed back to the queue on shutdown")
        .context("the first worker did not hand the export back")?;
    let at = |record: &serde_json::Value| -> Result<chrono::DateTime<chrono::Utc>> {
        Ok(record["timestamp"].as_str().context("a timestamp")?.parse()?)
    };
    let seconds_between = |from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>| {
        (to - from).num_microseconds().unwrap_or(0) as f64 / 1e6
    };
    let interrupted = Interrupted {
        seconds,
        resumed_at: resumed["rows"].as_u64().unwrap_or(0),
        rows_read: done["rows_read"].as_u64().unwrap_or(0),
        handing_back: seconds_between(signalled, at(&handed_back)?),
        taking: seconds_between(at(&handed_back)?, at(&resumed)?),
        first_attempt: seconds_between(
            at(&record(&logs[running], "export started").context("the first attempt's start")?)?,
            at(&handed_back)?,
        ),
        second_attempt: done["seconds"].as_f64().unwrap_or(f64::NAN),
    };
    workers.remove(running);
    Ok(interrupted)
}

/// Waits until a line of `log` contains `text` (a minute at most: a limit, not a figure).
async fn wait_for_log_line(log: &Path, text: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(log)?.contains(text) {
        anyhow::ensure!(Instant::now() < deadline, "{} never said {text:?}", log.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `completing_seconds` of every "export done" line of a worker's JSON log.
fn completing_seconds(log: &Path) -> Result<Vec<f64>> {
    Ok(std::fs::read_to_string(log)?
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|record| record["completing_seconds"].as_f64())
        .collect())
}

/// CPU time (user and system) the process has used, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces) start at its closing paren.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0) // USER_HZ, 100 on Linux
}

/// The process's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .context("VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}
