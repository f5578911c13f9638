//! The API's settings, every default stated once (`ApiSettings::default`, which the flags
//! read).

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Where clients connect (the edge); dropshot itself listens on a loopback port.
    pub listen: SocketAddr,
    pub max_pending_per_user: u32,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Origins allowed by CORS (none by default); `*` allows any origin, as `dev` does.
    pub cors_allowed_origins: Vec<String>,
    /// Where clients reach this API, for download links to locally stored files (default:
    /// `http://` and the address it listens on).
    pub public_url: Option<String>,
    /// Timeouts and the cap on client connections.
    pub connection_limits: exports_listener::Limits,
    /// Requests with a missing, unknown or revoked key one client address may make per minute
    /// before its API requests get `429`; 0 turns the limit off.
    pub max_failed_authentications_per_minute: u32,
    /// Where `/metrics` is served instead of the API's own address (which then answers 404).
    pub metrics_listen: Option<SocketAddr>,
    /// What webhook endpoint URLs must be (`http` and private addresses allowed for local
    /// development only).
    pub webhook_urls: exports_spec::webhook_url::UrlPolicy,
    /// After SIGTERM, how long `/health/ready` answers `503` while every other request is
    /// still served, before the listener closes: long enough for a load balancer's readiness
    /// probe to take the server out of rotation.
    pub shutdown_grace: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_pending_per_user: 3,
            request_timeout: Duration::from_secs(30),
            max_body_bytes: exports_spec::errors::DEFAULT_MAX_BODY_BYTES,
            cors_allowed_origins: Vec::new(),
            public_url: None,
            connection_limits: exports_listener::Limits::default(),
            max_failed_authentications_per_minute: 30,
            metrics_listen: None,
            webhook_urls: Default::default(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
