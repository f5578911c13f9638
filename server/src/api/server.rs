//! Starting and stopping the API: the edge in front of dropshot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::auth::RejectedKeys;
use super::contract::exports_api_mod;
use super::edge::{Edge, EdgeSettings};

use super::handlers::ExportsImpl;
use super::readiness::READINESS_FRESH_FOR;
use super::settings::ApiSettings;
use super::state::AppState;
use crate::db::users::MatchingUsers;
use crate::dependencies::Dependencies;
use crate::throughput::Throughput;

pub struct RunningApi {
    pub local_addr: SocketAddr,
    edge: Edge,
    server: dropshot::HttpServer<AppState>,
    metrics_listener: Option<exports_listener::Serving>,
    queue_depth: tokio::task::JoinHandle<()>,
    shutting_down: Arc<AtomicBool>,
    shutdown_grace: Duration,
}

impl RunningApi {
    pub async fn start(settings: ApiSettings, dependencies: &Dependencies) -> Result<Self> {
        let Dependencies {
            pool,
            queue,
            storage,
            metrics,
            ..
        } = dependencies.clone();
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
        let metrics_listener = match settings.metrics_listen {
            Some(listen) => Some(crate::metrics::serve(listen, metrics.clone()).await?),
            None => None,
        };
        let queue_depth = metrics.clone().keep_queue_depth_fresh(pool.clone());
        let shutting_down = Arc::new(AtomicBool::new(false));
        let state = AppState {
            pool,
            queue,
            throughput: Throughput::default(),
            matching_users: MatchingUsers::default(),
            storage,
            metrics,
            settings: settings.clone(),
            public_url,
            rejected_keys: RejectedKeys::default(),
            readiness: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(READINESS_FRESH_FOR)
                .build(),
            shutting_down: shutting_down.clone(),
        };
        let config = dropshot::ConfigDropshot {
            bind_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            default_request_body_max_bytes: settings.max_body_bytes,
            default_handler_task_mode: dropshot::HandlerTaskMode::Detached,
            ..Default::default()
        };
        let server = dropshot::ServerBuilder::new(api, state, crate::startup::logging::dropshot_logger())
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
                limits: settings.connection_limits,
                max_failed_authentications_per_minute: settings.max_failed_authentications_per_minute,
            },
        )?;
        let local_addr = edge.local_addr();
        tracing::info!(%local_addr, dropshot_addr = %server.local_addr(), "API listening");
        Ok(Self {
            local_addr,
            edge,
            server,
            metrics_listener,
            queue_depth,
            shutting_down,
            shutdown_grace: settings.shutdown_grace,
        })
    }

    /// Where `/metrics` is served apart from the API, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(exports_listener::Serving::local_addr)
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.edge.open_connections()
    }

    /// `/health/ready` answers `503` from now on; every other request is served as before.
    pub fn stop_being_ready(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// How SIGTERM stops the API behind a load balancer: unready for the shutdown grace
    /// period (cut short when `cut_short` resolves: a second signal), then `shutdown`.
    pub async fn stop(self, cut_short: impl std::future::Future<Output = ()>) -> Result<()> {
        self.stop_being_ready();
        if !self.shutdown_grace.is_zero() {
            tracing::info!(
                grace_seconds = self.shutdown_grace.as_secs(),
                "shutting down: /health/ready answers 503 while requests are still served (signal again to skip)"
            );
            tokio::select! {
                _ = tokio::time::sleep(self.shutdown_grace) => {}
                _ = cut_short => tracing::info!("shutdown grace cut short"),
            }
        }
        tracing::info!("shutting down: finishing requests in flight");
        self.shutdown().await
    }

    /// Stops accepting connections and lets requests in flight finish.
    pub async fn shutdown(self) -> Result<()> {
        self.edge.shutdown().await;
        self.queue_depth.abort();
        if let Some(metrics_listener) = self.metrics_listener {
            metrics_listener.shutdown(Duration::from_secs(5)).await;
        }
        self.server
            .close()
            .await
            .map_err(|error| anyhow::anyhow!("stopping the API server: {error}"))
    }
}
