//! What the handlers share.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::auth::RejectedKeys;
use super::error::{ApiError, ErrorDetail, DEPENDENCY_RETRY_AFTER_SECONDS};
use super::settings::ApiSettings;
use crate::db::users::MatchingUsers;
use crate::metrics::Metrics;
use crate::queue::JobQueue;
use crate::storage::Storage;
use crate::throughput::Throughput;

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
    pub rejected_keys: RejectedKeys,
    /// The last readiness check's unreachable dependencies, while fresh (`READINESS_FRESH_FOR`):
    /// however many probes arrive at once, one check runs.
    pub readiness: moka::future::Cache<(), Vec<ErrorDetail>>,
    /// Set once the server has been told to stop (`RunningApi::stop_being_ready`).
    pub shutting_down: Arc<AtomicBool>,
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
