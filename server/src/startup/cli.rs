//! The command line: one binary for the API, the worker, migrations and keys.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use uuid::Uuid;

use super::settings::{ApiArgs, WebhookArgs};
use crate::api::{ApiSettings, RunningApi};
use crate::db::keys::{self, SCOPES};
use crate::db::users;
use crate::db::DatabaseArgs;
use crate::db::Postgres;
use crate::dependencies::Dependencies;
use crate::queue::RedisArgs;
use crate::storage::StorageArgs;
use crate::telemetry;
use crate::worker::{RunningWorker, WorkerArgs};

/// The exports service: asynchronous CSV, XLSX and JSON Lines exports of users.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        webhooks: WebhookArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Run the export worker (run as many as you like, on any machines).
    Work {
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        webhooks: WebhookArgs,
        /// Address of this worker's Prometheus `/metrics` (none when absent).
        #[arg(long, env = "EXPORTS_WORKER_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
    },
    /// Apply the database migrations (or roll them back).
    Migrate {
        /// Undo the migrations newer than this version instead (0 undoes all).
        #[arg(long)]
        rollback_to: Option<i32>,
    },
    /// Issue or revoke API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Seed demo users and print a demo API key with a first request to try (what `dev` does
    /// before it serves; docker-compose.yml's `demo`). Needs the migrations applied.
    Demo {
        /// Where the API answers, for the request printed (default: `serve`'s own address).
        #[arg(long, default_value_t = api_url(ApiSettings::default().listen))]
        api_url: String,
        /// Demo users to seed (existing ones are kept).
        #[arg(long, default_value_t = DEMO_USERS)]
        demo_users: i64,
    },
    /// Development: migrate, seed demo users, print a demo API key, and run the API and a
    /// worker in one process.
    Dev {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        /// Demo users to seed (existing ones are kept).
        #[arg(long, default_value_t = DEMO_USERS)]
        demo_users: i64,
    },
}

const DEMO_USERS: i64 = 1000;

#[derive(Subcommand)]
enum KeysCommand {
    /// Issue a key for the user with this email (created if missing); prints the key once.
    Issue {
        #[arg(long)]
        email: String,
        /// A label for the key.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Scopes to grant (repeat the flag); default: all.
        #[arg(long = "scope", value_parser = clap::builder::PossibleValuesParser::new(SCOPES))]
        scopes: Vec<String>,
        /// Days until the key stops working (default: it does not expire).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        expires_in_days: Option<u32>,
    },
    /// List keys (never their secrets): scopes, expiry, last use, revocation.
    List {
        /// Only the keys of the user with this email.
        #[arg(long)]
        email: Option<String>,
    },
    /// Revoke a key by its id.
    Revoke { key_id: Uuid },
}

pub async fn main() -> Result<()> {
    let _flushed_on_exit = exports_listener::log::init().map_err(anyhow::Error::msg)?;
    let matches = Cli::command().get_matches();
    refuse_secrets_on_the_command_line(&matches)?;
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let postgres = cli.database.postgres()?;
    match cli.command {
        Command::Serve {
            api,
            webhooks,
            redis,
            storage,
        } => {
            let _traces = telemetry::init("exports-api")?;
            let dependencies =
                Dependencies::open(&cli.database, cli.database.database_pool_size, &redis, &storage).await?;
            run(dependencies, &api, webhooks, None).await
        }
        Command::Work {
            redis,
            storage,
            mut worker,
            webhooks,
            metrics_listen,
        } => {
            worker.webhook_urls = webhooks.policy();
            let _traces = telemetry::init("exports-worker")?;
            let pool_size = worker.concurrency * 2 + 2;
            let dependencies = Dependencies::open(&cli.database, pool_size, &redis, &storage).await?;
            let _metrics_listener = match metrics_listen {
                Some(listen) => {
                    let metrics = dependencies.metrics.clone();
                    metrics.clone().keep_queue_depth_fresh(dependencies.pool.clone());
                    Some(crate::metrics::serve(listen, metrics).await?)
                }
                None => None,
            };
            let mut signals = StopSignals::install()?;
            let worker = RunningWorker::start(worker, &dependencies).await?;
            signals.next().await;
            worker.shutdown(signals.next()).await;
            Ok(())
        }
        Command::Migrate { rollback_to: None } => {
            postgres.ensure_database().await?;
            let applied = postgres.migrate().await?;
            tracing::info!(?applied, "migrations applied");
            Ok(())
        }
        Command::Migrate {
            rollback_to: Some(target),
        } => {
            let undone = postgres.rollback(target).await?;
            tracing::info!(?undone, "migrations rolled back");
            Ok(())
        }
        Command::Keys { command } => keys(&postgres, command).await,
        Command::Demo { api_url, demo_users } => demo(&postgres, demo_users, &api_url).await,
        Command::Dev {
            mut api,
            redis,
            storage,
            worker,
            demo_users,
        } => {
            // Nothing routes traffic to `dev`: it stops at once unless told otherwise.
            let grace_given = matches
                .subcommand_matches("dev")
                .and_then(|dev| dev.value_source("shutdown_grace_secs"))
                .is_some_and(|source| source != ValueSource::DefaultValue);
            if !grace_given {
                api.shutdown_grace_secs = 0;
            }
            postgres.ensure_database().await?;
            postgres.migrate().await?;
            demo(&postgres, demo_users, &api_url(api.listen)).await?;
            if api.cors_allowed_origins.is_empty() {
                api.cors_allowed_origins = vec!["*".to_string()];
                tracing::info!("dev: CORS allows any origin (set --cors-allowed-origins to narrow it)");
            }
            // Always on in dev (no flag to give): receivers under development run locally.
            tracing::warn!(
                "dev: webhook endpoints may be http and private or loopback addresses; never in production"
            );
            let webhooks = WebhookArgs { allow_private: true };
            let _traces = telemetry::init("exports-dev")?;
            let dependencies =
                Dependencies::open(&cli.database, cli.database.database_pool_size, &redis, &storage).await?;
            run(dependencies, &api, webhooks, Some(worker)).await
        }
    }
}

/// The URL of an API listening on `listen`, for the request `demo` prints.
fn api_url(listen: SocketAddr) -> String {
    format!("http://{listen}")
}

/// Seeds the demo users and prints a new demo key (all scopes) with a request to try on it.
async fn demo(postgres: &Postgres, demo_users: i64, api_url: &str) -> Result<()> {
    let pool = postgres.pool(2)?;
    let client = pool.get().await?;
    let seeded = users::seed_demo_users(&client, demo_users).await?;
    let user_id = users::ensure_user(&client, "demo@example.com", "Demo User").await?;
    let scopes: Vec<String> = SCOPES.iter().map(|s| s.to_string()).collect();
    let key = keys::issue_key(&client, user_id, "dev", &scopes, None).await?;
    tracing::info!(seeded, "demo users ready");
    println!(
        "\nDemo API key (demo@example.com, all scopes):\n\n    {}\n",
        key.token
    );
    println!("Try: curl -s -X POST {api_url}/api/v1/exports/users \\");
    println!(
        "       -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' \\",
        key.token
    );
    println!("       -d '{{\"format\":\"csv\",\"filters\":{{\"status\":\"active\"}}}}'\n");
    Ok(())
}

/// Every user of the machine can read a process's arguments (`ps`), so secrets come from the
/// environment: a secret flag, or a URL flag with a password, is refused without echoing it.
fn refuse_secrets_on_the_command_line(matches: &ArgMatches) -> Result<()> {
    let secrets = [
        ("s3_secret_access_key", "EXPORTS_S3_SECRET_ACCESS_KEY"),
        ("download_signing_key", "EXPORTS_DOWNLOAD_SIGNING_KEY"),
    ];
    let urls = [
        ("database_url", "EXPORTS_DATABASE_URL"),
        ("redis_url", "EXPORTS_REDIS_URL"),
    ];
    let levels = std::iter::once(matches).chain(matches.subcommand().map(|(_, sub)| sub));
    for matches in levels {
        let on_command_line = |id: &str| {
            matches.ids().any(|known| known == id)
                && matches.value_source(id) == Some(ValueSource::CommandLine)
        };
        let flag = |id: &str| format!("--{}", id.replace('_', "-"));
        for (id, variable) in secrets {
            if on_command_line(id) {
                bail!(
                    "{} is visible to every user of this machine on the command line; set {variable} instead",
                    flag(id)
                );
            }
        }
        for (id, variable) in urls {
            let has_password = matches
                .try_get_one::<String>(id)
                .ok()
                .flatten()
                .and_then(|url| url::Url::parse(url).ok())
                .is_some_and(|url| url.password().is_some());
            if on_command_line(id) && has_password {
                bail!(
                    "the password in {} is visible to every user of this machine on the command line; set {variable} instead",
                    flag(id)
                );
            }
        }
    }
    Ok(())
}

/// The API, and in `dev` a worker beside it sharing its dependencies.
async fn run(
    dependencies: Dependencies,
    api: &ApiArgs,
    webhooks: WebhookArgs,
    worker: Option<WorkerArgs>,
) -> Result<()> {
    let mut signals = StopSignals::install()?;
    let worker = match worker {
        Some(settings) => {
            let settings = WorkerArgs {
                webhook_urls: webhooks.policy(),
                ..settings
            };
            Some(RunningWorker::start(settings, &dependencies).await?)
        }
        None => None,
    };
    let settings = ApiSettings {
        webhook_urls: webhooks.policy(),
        ..api.settings()
    };
    let api = RunningApi::start(settings, &dependencies).await?;
    signals.next().await;
    // A second signal cuts short the grace of both the API and the worker.
    let (second_signal, cut_short) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signals.next().await;
        let _ = second_signal.send(true);
    });
    let cut_short = || {
        let mut cut_short = cut_short.clone();
        async move {
            let _ = cut_short.wait_for(|cut| *cut).await;
        }
    };
    let worker_stopped = async {
        if let Some(worker) = worker {
            worker.shutdown(cut_short()).await;
        }
    };
    let (api_stopped, ()) = tokio::join!(api.stop(cut_short()), worker_stopped);
    api_stopped
}

/// SIGTERM (what orchestrators send) and Ctrl-C, each heard every time it comes: the first
/// starts a graceful stop, the next cuts its grace short.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installed before the service starts, so that no signal meets the default handler.
    fn install() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

async fn keys(postgres: &Postgres, command: KeysCommand) -> Result<()> {
    let pool = postgres.pool(1)?;
    let client = pool.get().await.context("connecting to PostgreSQL")?;
    match command {
        KeysCommand::Issue {
            email,
            name,
            mut scopes,
            expires_in_days,
        } => {
            if scopes.is_empty() {
                scopes = SCOPES.iter().map(|s| s.to_string()).collect();
            }
            let expires_at =
                expires_in_days.map(|days| chrono::Utc::now() + chrono::Duration::days(days.into()));
            let user_id = users::ensure_user(&client, &email, &email).await?;
            let key = keys::issue_key(&client, user_id, &name, &scopes, expires_at).await?;
            println!(
                "key id: {}\nuser id: {user_id}\nscopes: {}\nexpires: {}\nkey: {}",
                key.id,
                scopes.join(" "),
                moment(expires_at, "never"),
                key.token
            );
        }
        KeysCommand::List { email } => {
            println!("id\temail\tname\tscopes\tcreated\texpires\tlast used\trevoked");
            for key in keys::list_keys(&client, email.as_deref()).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    key.id,
                    key.email,
                    key.name,
                    key.scopes.join(" "),
                    moment(Some(key.created_at), "-"),
                    moment(key.expires_at, "never"),
                    moment(key.last_used_at, "never"),
                    moment(key.revoked_at, "-"),
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            if keys::revoke_key(&client, key_id).await? {
                println!("revoked {key_id}");
            } else {
                anyhow::bail!("no active key {key_id}");
            }
        }
    }
    Ok(())
}

/// A time in `keys` output, to the second.
fn moment(at: Option<chrono::DateTime<chrono::Utc>>, otherwise: &str) -> String {
    at.map_or_else(
        || otherwise.to_string(),
        |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}
