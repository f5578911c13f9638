//! Project tasks: `cargo xtask <task>`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

mod bench;
mod bench_export;
mod bench_fairness;
mod bench_mock;
mod bench_webhooks;
mod contract;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Project tasks for the exports workspace")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Regenerate client/src/generated.rs from spec/openapi.yaml with progenitor.
    Client {
        /// Fail instead of writing when the committed client is stale.
        #[arg(long)]
        check: bool,
    },
    /// Contract checks of spec/openapi.yaml.
    Spec {
        #[command(subcommand)]
        command: SpecCommand,
    },
    /// Benchmarks; each prints figures and ends with one JSON line.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

#[derive(Subcommand)]
enum SpecCommand {
    /// Compare the document dropshot generates from the server with the spec, by meaning.
    Check {
        /// Also list, one by one, what is verified at runtime.
        #[arg(long)]
        verbose: bool,
    },
    /// The spec's own rules: operationIds, summaries, examples, the error envelope.
    Lint,
    /// Breaking changes for clients between the spec at a git revision and now.
    Diff {
        /// The revision to compare with (a commit, branch or tag).
        #[arg(long)]
        base: String,
    },
}

#[derive(Subcommand)]
enum BenchTarget {
    /// Exports of a large table end to end (API, queue, worker, S3) in every kind of file,
    /// beside PostgreSQL's COPY of the same query, alone and piped into `aws s3 cp -`, with the
    /// worker's peak RSS, and a CSV export interrupted part-way and resumed.
    Export {
        /// Users in the table, all of them exported.
        #[arg(long, default_value_t = 1_000_000)]
        users: i64,
        /// Exports of each format (and COPYs, and pipes into the AWS CLI) measured; the medians
        /// are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Also time a CSV export whose worker gets SIGTERM once this share of its rows is
        /// checkpointed (another worker resumes it), against an uninterrupted one; 0 skips it.
        #[arg(long, default_value_t = 0.6)]
        interrupt_at: f64,
    },
    /// Small exports from one user behind a backlog of big ones from many users: their time
    /// from create to done (p50, p99), and the backlog's, with the workers' scheduling and
    /// first in, first out; fails when a request gets an unexpected answer.
    Fairness {
        /// Users queueing the backlog.
        #[arg(long, default_value_t = 50)]
        users: usize,
        /// Big exports each of them queues (at most the per-user limit of pending exports, 3).
        #[arg(long, default_value_t = 3)]
        exports_per_user: usize,
        /// Users in the table: each big export has them all.
        #[arg(long, default_value_t = 200_000)]
        rows: i64,
        /// Small exports (1,000 users each), one after another while the backlog drains.
        #[arg(long, default_value_t = 20)]
        small: usize,
        /// Worker processes, one job at a time each.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// The mock server: a static GET and a validated POST, beside Prism on the same spec;
    /// fails when any request to the mock gets an unexpected status.
    Mock {
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Webhook events delivered per second by the release worker to a local receiver, and
    /// the p50/p99 delay from status change to delivery; fails when an event is lost.
    Webhooks {
        /// Events in all (default 10,000); with `--slow-endpoints`, the other user's events
        /// (default 100: they come one every 200 ms, so 20 s).
        #[arg(long)]
        events: Option<usize>,
        /// Status changes (cancels) per second.
        #[arg(long, default_value_t = 1_250)]
        rate: u64,
        /// Every status change before the worker starts: the delivery pipeline alone.
        #[arg(long)]
        burst: bool,
        /// Instead: one user's 10 endpoints answer after 9 s while that user makes an event
        /// every 200 ms, and another user's endpoint answers at once, for `--events` of the
        /// other user's events (one every 200 ms); prints both users' delays.
        #[arg(long, conflicts_with = "burst")]
        slow_endpoints: bool,
    },
    /// Requests/s and p50/p99 latency of create, get and list beside a no-op endpoint; fails
    /// when any request gets an unexpected status.
    Api {
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds of load per operation.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Users in the table (the create operation counts the matching ones).
        #[arg(long, default_value_t = 10_000)]
        users: i64,
        /// Distinct API users the creates are spread over, so that they seldom wait for each
        /// other on a user's lock. The per-user limit of pending exports is lifted for the run.
        #[arg(long, default_value_t = 20_000)]
        callers: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.task, Task::Bench { .. }) && cfg!(debug_assertions) {
        return bench_optimised();
    }
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The benchmarks' load generator shares the machine's cores with what it measures, so it
/// runs optimised: the same command again from a release build of xtask, beside the release
/// server the benchmarks build anyway. (The spec tasks, which CI runs, stay a quick debug
/// build.)
fn bench_optimised() -> ExitCode {
    let status = Command::new(env!("CARGO"))
        .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: running the optimised xtask: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.task {
        Task::Client { check } => client(check),
        Task::Spec {
            command: SpecCommand::Check { verbose },
        } => spec_check(verbose),
        Task::Spec {
            command: SpecCommand::Lint,
        } => spec_lint(),
        Task::Spec {
            command: SpecCommand::Diff { base },
        } => spec_diff(&base),
        Task::Bench {
            target:
                BenchTarget::Export {
                    users,
                    runs,
                    interrupt_at,
                },
        } => {
            anyhow::ensure!(
                (0.0..1.0).contains(&interrupt_at),
                "--interrupt-at is a share of the rows, from 0 (skipped) to below 1"
            );
            bench_export::run(
                &workspace_root(),
                bench_export::ExportBenchOptions {
                    users,
                    runs,
                    interrupt_at,
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Bench {
            target:
                BenchTarget::Webhooks {
                    events,
                    rate,
                    burst,
                    slow_endpoints,
                },
        } => bench_webhooks::run(
            &workspace_root(),
            bench_webhooks::WebhookBenchOptions {
                events: events.unwrap_or(if slow_endpoints { 100 } else { 10_000 }),
                rate,
                burst,
                slow_endpoints,
            },
        ),
        Task::Bench {
            target:
                BenchTarget::Fairness {
                    users,
                    exports_per_user,
                    rows,
                    small,
                    workers,
                },
        } => bench_fairness::run(
            &workspace_root(),
            bench_fairness::FairnessBenchOptions {
                users,
                exports_per_user,
                rows,
                small,
                workers,
            },
        ),
        Task::Bench {
            target: BenchTarget::Mock { connections, seconds },
        } => bench_mock::run(
            &workspace_root(),
            bench_mock::MockBenchOptions { connections, seconds },
        ),
        Task::Bench {
            target:
                BenchTarget::Api {
                    connections,
                    seconds,
                    users,
                    callers,
                },
        } => bench::run(
            &workspace_root(),
            bench::ApiBenchOptions {
                connections,
                seconds,
                users,
                callers,
            },
        ),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

const GENERATED_HEADER: &str = "\
// @generated by `cargo xtask client` from spec/openapi.yaml with progenitor. Do not edit:
// change the spec and regenerate (`cargo xtask client --check` fails when this is stale).
";

fn generate_client(spec_yaml: &str) -> Result<String> {
    let spec: openapiv3::OpenAPI = serde_yaml_ng::from_str(spec_yaml).context("parsing the spec")?;
    let mut settings = progenitor::GenerationSettings::default();
    settings.with_interface(progenitor::InterfaceStyle::Positional);
    let mut generator = progenitor::Generator::new(&settings);
    let tokens = generator
        .generate_tokens(&spec)
        .context("generating the client")?;
    let file: syn::File = syn::parse2(tokens).context("parsing the generated client")?;
    Ok(format!("{GENERATED_HEADER}\n{}", prettyplease::unparse(&file)))
}

fn load_spec() -> Result<exports_spec::Spec> {
    exports_spec::Spec::load(workspace_root().join("spec/openapi.yaml"))
}

fn spec_check(verbose: bool) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let spec = load_spec()?;
    let server = exports_spec::Spec::from_value(exports_server::api::openapi_document())?;
    let findings = contract::check(&spec, &server);
    for finding in findings
        .iter()
        .filter(|f| verbose || f.severity != contract::Severity::Runtime)
    {
        println!("{finding}");
    }
    let count = |severity| findings.iter().filter(|f| f.severity == severity).count();
    let drift = count(contract::Severity::Drift);
    println!(
        "\nspec check: {drift} drift, {} warnings, {} verified at runtime (--verbose lists them) ({} ms)",
        count(contract::Severity::Warning),
        count(contract::Severity::Runtime),
        started.elapsed().as_millis()
    );
    Ok(if drift == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn spec_diff(base: &str) -> Result<ExitCode> {
    let output = std::process::Command::new("git")
        .args(["show", &format!("{base}:spec/openapi.yaml")])
        .current_dir(workspace_root())
        .output()
        .context("running git")?;
    anyhow::ensure!(
        output.status.success(),
        "git show {base}:spec/openapi.yaml: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let old = exports_spec::Spec::parse(&String::from_utf8(output.stdout)?)?;
    let new = load_spec()?;
    let breaking = contract::diff(&old, &new);
    for change in &breaking {
        println!(
            "breaking: {}: {}\n    before: {}\n    after:  {}",
            change.operation, change.reason, change.spec_pointer, change.server_pointer
        );
    }
    if breaking.is_empty() {
        println!("spec diff: no breaking changes since {base}");
        Ok(ExitCode::SUCCESS)
    } else if contract::major_raised(&old, &new) {
        println!(
            "spec diff: {} breaking changes since {base}, announced by a new major info.version",
            breaking.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "spec diff: {} breaking changes since {base}; raise info.version's major to announce them",
            breaking.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

fn spec_lint() -> Result<ExitCode> {
    let problems = contract::lint(&load_spec()?);
    for problem in &problems {
        println!("{problem}");
    }
    println!("spec lint: {} problems", problems.len());
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn client(check: bool) -> Result<ExitCode> {
    let root = workspace_root();
    let spec =
        std::fs::read_to_string(root.join("spec/openapi.yaml")).context("reading spec/openapi.yaml")?;
    let generated = generate_client(&spec)?;
    let target = root.join("client/src/generated.rs");
    let current = std::fs::read_to_string(&target).unwrap_or_default();
    if current == generated {
        println!("client/src/generated.rs is up to date");
        return Ok(ExitCode::SUCCESS);
    }
    if check {
        eprintln!("client/src/generated.rs is stale: run `cargo xtask client` and commit the result");
        return Ok(ExitCode::FAILURE);
    }
    std::fs::write(&target, generated).context("writing client/src/generated.rs")?;
    println!("wrote client/src/generated.rs");
    Ok(ExitCode::SUCCESS)
}
