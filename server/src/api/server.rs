//! Starting and stopping the API: the edge in front of dropshot.

use std::net::SocketAddr;
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
