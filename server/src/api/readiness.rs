//! Liveness and readiness: whether PostgreSQL and Redis answer, asked at most once per
//! `READINESS_FRESH_FOR` however many probes arrive (`AppState::readiness`).

use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use super::error::ErrorDetail;
use super::state::AppState;

const READINESS_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one readiness check answers for.
pub(super) const READINESS_FRESH_FOR: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Health {
    pub status: HealthStatus,
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Readiness {
    pub status: HealthStatus,
    pub checks: ReadinessChecks,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ReadinessChecks {
    pub postgres: HealthStatus,
    pub redis: HealthStatus,
}

/// The dependencies that do not answer, each check bounded so that readiness answers
/// quickly when one hangs.
pub(super) async fn unreachable_dependencies(state: &AppState) -> Vec<ErrorDetail> {
    let postgres = tokio::time::timeout(READINESS_CHECK_TIMEOUT, crate::db::answers(&state.pool));
    let redis = tokio::time::timeout(READINESS_CHECK_TIMEOUT, state.queue.ping());
    let (postgres, redis) = tokio::join!(postgres, redis);
    let mut failing = Vec::new();
    for (name, outcome) in [("postgres", postgres), ("redis", redis)] {
        let error = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => format!("{error:#}"),
            Err(_) => "timed out".to_string(),
        };
        // The cause goes to the log; this endpoint needs no key, so it names no hosts.
        tracing::warn!(dependency = name, %error, "readiness check failed");
        failing.push(ErrorDetail::new(name, "unreachable"));
    }
    failing
}
