//! Settings from flags and environment variables, with defaults that work on a development
//! machine (PostgreSQL and Redis on localhost).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use exports_listener::Limits;

use crate::api::ApiSettings;

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address the API listens on.
    #[arg(long, env = "EXPORTS_LISTEN", default_value_t = ApiSettings::default().listen)]
    pub listen: SocketAddr,
    /// Pending or processing exports one user may have at once.
    #[arg(long, env = "EXPORTS_MAX_PENDING_PER_USER", default_value_t = ApiSettings::default().max_pending_per_user)]
    pub max_pending_per_user: u32,
    /// Time limit of one request, in seconds (504 past it).
    #[arg(long, env = "EXPORTS_REQUEST_TIMEOUT_SECS", default_value_t = ApiSettings::default().request_timeout.as_secs())]
    pub request_timeout_secs: u64,
    /// Largest request body, in bytes (413 past it).
    #[arg(long, env = "EXPORTS_MAX_BODY_BYTES", default_value_t = ApiSettings::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Origins allowed by CORS, comma-separated (none by default; `dev`: any); `*` allows any.
    #[arg(long, env = "EXPORTS_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
    /// Base URL clients reach the API at, for download links to locally stored files
    /// (default: `http://` and `--listen`).
    #[arg(long, env = "EXPORTS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds a client has from the first byte of a request head to its last (the
    /// connection is closed past it).
    #[arg(long, env = "EXPORTS_HEADER_READ_TIMEOUT_SECS", default_value_t = Limits::default().header_read_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay open with no byte moving and no request being handled
    /// (keep it longer than a load balancer's idle timeout in front of the API).
    #[arg(long, env = "EXPORTS_IDLE_TIMEOUT_SECS", default_value_t = Limits::default().idle_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// Client connections open at once; more wait until one closes (keep it below the open
    /// file limit, `ulimit -n`).
    #[arg(long, env = "EXPORTS_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Requests with a missing, unknown or revoked key one client address may make per minute
    /// before its API requests get `429` (0: no limit; counted per TCP peer, so behind a load
    /// balancer turn it off here and limit there).
    #[arg(long, env = "EXPORTS_MAX_FAILED_AUTH_PER_MINUTE", default_value_t = ApiSettings::default().max_failed_authentications_per_minute)]
    pub max_failed_auth_per_minute: u32,
    /// Serve `/metrics` on this address instead of the API's (which then answers 404).
    #[arg(long, env = "EXPORTS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds between SIGTERM and closing the listener, while `/health/ready` answers 503
    /// and every other request is still served (a second signal cuts it short; `dev`: 0).
    #[arg(long, env = "EXPORTS_SHUTDOWN_GRACE_SECS", default_value_t = ApiSettings::default().shutdown_grace.as_secs())]
    pub shutdown_grace_secs: u64,
}

/// What both the API (registration) and the workers (delivery) hold webhook URLs to.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct WebhookArgs {
    /// Let webhook endpoints be `http` and resolve to loopback, private and other
    /// special-purpose addresses: for local development only (`dev` turns it on).
    #[arg(long = "webhooks-allow-private", env = "EXPORTS_WEBHOOKS_ALLOW_PRIVATE")]
    pub allow_private: bool,
}

impl WebhookArgs {
    pub fn policy(&self) -> exports_spec::webhook_url::UrlPolicy {
        exports_spec::webhook_url::UrlPolicy {
            allow_private: self.allow_private,
            ..Default::default()
        }
    }
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
            connection_limits: Limits {
                header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
                idle_timeout: Duration::from_secs(self.idle_timeout_secs),
                max_connections: self.max_connections as usize,
                ..Limits::default()
            },
            max_failed_authentications_per_minute: self.max_failed_auth_per_minute,
            metrics_listen: self.metrics_listen,
            webhook_urls: Default::default(),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
        }
    }
}
