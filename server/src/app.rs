//! Wiring: the shared state of the handlers, and starting and stopping the API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::api::{exports_api_mod, imp::ExportsImpl};
use crate::edge::{Edge, EdgeSettings};
use crate::error::{ApiError, ErrorDetail};
use crate::metrics::Metrics;
use crate::queue::JobQueue;
use crate::storage::Storage;
use crate::store::MatchingUsers;
use crate::throughput::Throughput;

/// `Retry-After` when PostgreSQL or Redis is unreachable.
pub const DEPENDENCY_RETRY_AFTER_SECONDS: u64 = 5;

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Where clients connect (the edge); dropshot itself listens on a loopback port.
    pub listen: SocketAddr,
    pub max_pending_per_user: u32,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Origins allowed by CORS; `*` allows any origin (API keys are bearer tokens, not cookies).
    pub cors_allowed_origins: Vec<String>,
    /// Where clients reach this API, for download links to locally stored files (default:
    /// `http://` and the address it listens on).
    pub public_url: Option<String>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_pending_per_user: 3,
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            cors_allowed_origins: vec!["*".to_string()],
            public_url: None,
        }
    }
}

pub struct AppState {
    pub pool: deadpool_postgres::Pool,
    pub queue: JobQueue,
    pub throughput: Throughput,
    pub matching_users: MatchingUsers,
    pub storage: Storage,
    pub metrics: Arc<Metrics>,
    pub settings: ApiSettings,
    /// `settings.public_url`, or the address the API is listening on.
    pub public_url: String,
}

impl AppState {
    /// A pooled connection; an unreachable PostgreSQL is a 503 the client may retry, not a 500.
    pub async fn database(&self) -> Result<deadpool_postgres::Client, ApiError> {
        self.pool.get().await.map_err(|error| {
            tracing::error!(error = %error, "no PostgreSQL connection");
            ApiError::unavailable(
                vec![ErrorDetail::new("postgres", "unreachable")],
                DEPENDENCY_RETRY_AFTER_SECONDS,
            )
        })
    }
}

pub struct RunningApi {
    pub local_addr: SocketAddr,
    edge: Edge,
    server: dropshot::HttpServer<AppState>,
}

impl RunningApi {
    pub async fn start(
        settings: ApiSettings,
        pool: deadpool_postgres::Pool,
        queue: JobQueue,
        storage: Storage,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let api =
            exports_api_mod::api_description::<ExportsImpl>().context("building the API description")?;
        // Bound first, so that download links name the real port even when it was 0.
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("listening on {}", settings.listen))?;
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", listener.local_addr().expect("a bound address")));
        let state = AppState {
            pool,
            queue,
            throughput: Throughput::default(),
            matching_users: MatchingUsers::default(),
            storage,
            metrics,
            settings: settings.clone(),
            public_url,
        };
        let config = dropshot::ConfigDropshot {
            bind_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            default_request_body_max_bytes: settings.max_body_bytes,
            default_handler_task_mode: dropshot::HandlerTaskMode::Detached,
            ..Default::default()
        };
        let server = dropshot::ServerBuilder::new(api, state, crate::logging::dropshot_logger())
            .config(config)
            .start()
            .map_err(|error| anyhow::anyhow!("starting the API server: {error}"))?;
        let edge = Edge::start(
            listener,
            EdgeSettings {
                upstream: server.local_addr(),
                // The handlers answer 504 themselves at the limit; this only catches a stuck server.
                upstream_timeout: settings.request_timeout + Duration::from_secs(5),
                max_body_bytes: settings.max_body_bytes,
                cors_allowed_origins: settings.cors_allowed_origins.clone(),
            },
        )
        .await?;
        let local_addr = edge.local_addr();
        tracing::info!(%local_addr, dropshot_addr = %server.local_addr(), "API listening");
        Ok(Self {
            local_addr,
            edge,
            server,
        })
    }

    /// Stops accepting connections and lets requests in flight finish.
    pub async fn shutdown(self) -> Result<()> {
        self.edge.shutdown().await;
        self.server
            .close()
            .await
            .map_err(|error| anyhow::anyhow!("stopping the API server: {error}"))
    }
}
