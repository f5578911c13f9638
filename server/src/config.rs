//! Settings from flags and environment variables, with defaults that work on a development
//! machine (PostgreSQL and Redis on localhost).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::app::ApiSettings;

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL; the database is created by `migrate` and `dev` if missing.
    #[arg(
        long,
        env = "EXPORTS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/exports"
    )]
    pub database_url: String,
    /// Connections in the pool.
    #[arg(long, env = "EXPORTS_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,
}

#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    #[arg(long, env = "EXPORTS_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Prefix of every Redis key this deployment uses.
    #[arg(long, env = "EXPORTS_REDIS_PREFIX", default_value = "exports:")]
    pub redis_prefix: String,
    #[arg(long, env = "EXPORTS_REDIS_POOL_SIZE", default_value_t = 4)]
    pub redis_pool_size: usize,
}

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address the API listens on.
    #[arg(long, env = "EXPORTS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Pending or processing exports one user may have at once.
    #[arg(long, env = "EXPORTS_MAX_PENDING_PER_USER", default_value_t = 3)]
    pub max_pending_per_user: u32,
    /// Time limit of one request, in seconds (504 past it).
    #[arg(long, env = "EXPORTS_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Largest request body, in bytes (413 past it).
    #[arg(long, env = "EXPORTS_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Origins allowed by CORS, comma-separated; `*` allows any.
    #[arg(
        long,
        env = "EXPORTS_CORS_ALLOWED_ORIGINS",
        default_value = "*",
        value_delimiter = ','
    )]
    pub cors_allowed_origins: Vec<String>,
    /// Base URL clients reach the API at, for download links to locally stored files
    /// (default: `http://` and `--listen`).
    #[arg(long, env = "EXPORTS_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl ApiArgs {
    pub fn settings(&self) -> ApiSettings {
        ApiSettings {
            listen: self.listen,
            max_pending_per_user: self.max_pending_per_user,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_body_bytes: self.max_body_bytes,
            cors_allowed_origins: self.cors_allowed_origins.clone(),
            public_url: self.public_url.clone(),
        }
    }
}
