//! The command line: one binary for the API, the worker, migrations and keys.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::app::RunningApi;
use crate::auth::{self, SCOPES};
use crate::config::{ApiArgs, DatabaseArgs, RedisArgs};
use crate::metrics::Metrics;
use crate::queue::{self, JobQueue};
use crate::storage::{Storage, StorageArgs};
use crate::worker::{RunningWorker, WorkerArgs};
use crate::{db, logging, users};

/// The exports service: asynchronous CSV and XLSX exports of users.
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
        #[arg(long, default_value_t = 1000)]
        demo_users: i64,
    },
}

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
    },
    /// Revoke a key by its id.
    Revoke { key_id: Uuid },
}

pub async fn main() -> Result<()> {
    logging::init();
    let cli = Cli::parse();
    let database_url = &cli.database.database_url;
    match cli.command {
        Command::Serve { api, redis, storage } => run(&cli.database, &api, &redis, &storage, None).await,
        Command::Work {
            redis,
            storage,
            worker,
            metrics_listen,
        } => {
            let pool = db::pool(database_url, worker.concurrency * 2 + 2)?;
            let metrics = Arc::new(Metrics::new());
            let _metrics_listener = match metrics_listen {
                Some(listen) => {
                    metrics.clone().keep_queue_depth_fresh(pool.clone());
                    Some(crate::metrics::serve(listen, metrics.clone()).await?)
                }
                None => None,
            };
            let (queue, storage) = (job_queue(&redis).await?, Storage::open(&storage)?);
            let worker =
                RunningWorker::start(worker, pool, &redis.redis_url, queue, storage, metrics).await?;
            shutdown_signal().await;
            tracing::info!("shutting down: handing running jobs back to the queue");
            worker.shutdown().await;
            Ok(())
        }
        Command::Migrate { rollback_to: None } => {
            db::ensure_database(database_url).await?;
            let applied = db::migrate(database_url).await?;
            tracing::info!(?applied, "migrations applied");
            Ok(())
        }
        Command::Migrate {
            rollback_to: Some(target),
        } => {
            let undone = db::rollback(database_url, target).await?;
            tracing::info!(?undone, "migrations rolled back");
            Ok(())
        }
        Command::Keys { command } => keys(database_url, command).await,
        Command::Dev {
            api,
            redis,
            storage,
            worker,
            demo_users,
        } => {
            db::ensure_database(database_url).await?;
            db::migrate(database_url).await?;
            let pool = db::pool(database_url, 2)?;
            let client = pool.get().await?;
            let seeded = users::seed_demo_users(&client, demo_users).await?;
            let user_id = users::ensure_user(&client, "demo@example.com", "Demo User").await?;
            let scopes: Vec<String> = SCOPES.iter().map(|s| s.to_string()).collect();
            let key = auth::issue_key(&client, user_id, "dev", &scopes).await?;
            tracing::info!(seeded, "demo users ready");
            println!(
                "\nDemo API key (demo@example.com, all scopes):\n\n    {}\n",
                key.token
            );
            println!(
                "Try: curl -s -X POST http://{}/api/v1/exports/users \\",
                api.listen
            );
            println!(
                "       -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' \\",
                key.token
            );
            println!("       -d '{{\"format\":\"csv\",\"filters\":{{\"status\":\"active\"}}}}'\n");
            let mut api = api;
            if api.cors_allowed_origins.is_empty() {
                api.cors_allowed_origins = vec!["*".to_string()];
                tracing::info!("dev: CORS allows any origin (set --cors-allowed-origins to narrow it)");
            }
            run(&cli.database, &api, &redis, &storage, Some(worker)).await
        }
    }
}

async fn job_queue(redis: &RedisArgs) -> Result<JobQueue> {
    let redis_pool = queue::connect(&redis.redis_url, redis.redis_pool_size).await?;
    Ok(JobQueue::new(redis_pool, &redis.redis_prefix))
}

/// The API, and in `dev` a worker beside it sharing its pool and metrics.
async fn run(
    database: &DatabaseArgs,
    api: &ApiArgs,
    redis: &RedisArgs,
    storage: &StorageArgs,
    worker: Option<WorkerArgs>,
) -> Result<()> {
    let pool = db::pool(&database.database_url, database.database_pool_size)?;
    let metrics = Arc::new(Metrics::new());
    let (queue, storage) = (job_queue(redis).await?, Storage::open(storage)?);
    let worker = match worker {
        Some(settings) => Some(
            RunningWorker::start(
                settings,
                pool.clone(),
                &redis.redis_url,
                queue.clone(),
                storage.clone(),
                metrics.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let api = RunningApi::start(api.settings(), pool, queue, storage, metrics).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    if let Some(worker) = worker {
        worker.shutdown().await;
    }
    api.shutdown().await
}

/// SIGTERM (what orchestrators send) or Ctrl-C.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn keys(database_url: &str, command: KeysCommand) -> Result<()> {
    let pool = db::pool(database_url, 1)?;
    let client = pool.get().await.context("connecting to PostgreSQL")?;
    match command {
        KeysCommand::Issue {
            email,
            name,
            mut scopes,
        } => {
            if scopes.is_empty() {
                scopes = SCOPES.iter().map(|s| s.to_string()).collect();
            }
            let user_id = users::ensure_user(&client, &email, &email).await?;
            let key = auth::issue_key(&client, user_id, &name, &scopes).await?;
            println!(
                "key id: {}\nuser id: {user_id}\nscopes: {}\nkey: {}",
                key.id,
                scopes.join(" "),
                key.token
            );
        }
        KeysCommand::Revoke { key_id } => {
            if auth::revoke_key(&client, key_id).await? {
                println!("revoked {key_id}");
            } else {
                anyhow::bail!("no active key {key_id}");
            }
        }
    }
    Ok(())
}
