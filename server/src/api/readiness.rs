//! Liveness and readiness: whether PostgreSQL and Redis answer, asked at most once per
//! `READINESS_FRESH_FOR` however many probes arrive.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use super::error::ErrorDetail;
use super::server::AppState;

const READINESS_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one readiness check answers for.
pub(super) const READINESS_FRESH_FOR: Duration = Duration::from_secs(1);

/// The last result of a check, reused while it is fresh: however many callers ask at once, one
/// check runs, and at most one per `fresh_for`.
pub struct Recent<T> {
    fresh_for: Duration,
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, T)>>,
}

impl<T: Clone> Recent<T> {
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            last: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn get(&self, check: impl std::future::Future<Output = T>) -> T {
        let mut last = self.last.lock().await;
        if let Some((at, value)) = last.as_ref() {
            if at.elapsed() < self.fresh_for {
                return value.clone();
            }
        }
        let value = check.await;
        *last = Some((tokio::time::Instant::now(), value.clone()));
        value
    }
}

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
    let postgres = tokio::time::timeout(READINESS_CHECK_TIMEOUT, async {
        let client = state.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok::<_, anyhow::Error>(())
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_recent_check_runs_once_for_callers_at_once_and_again_when_stale() {
        let checks = AtomicUsize::new(0);
        let check = || async {
            tokio::task::yield_now().await;
            checks.fetch_add(1, Ordering::SeqCst)
        };
        let fresh_for_an_hour = Recent::new(Duration::from_secs(3600));
        let answers = futures::future::join_all((0..10).map(|_| fresh_for_an_hour.get(check()))).await;
        assert_eq!(answers, vec![0; 10]);
        assert_eq!(checks.load(Ordering::SeqCst), 1);

        let always_stale = Recent::new(Duration::ZERO);
        assert_eq!(always_stale.get(check()).await, 1);
        assert_eq!(always_stale.get(check()).await, 2);
        assert_eq!(checks.load(Ordering::SeqCst), 3);
    }
}
