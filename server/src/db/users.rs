//! The users table: what is exported, and who requests exports.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use uuid::Uuid;

use crate::model::{UserExportFilters, UserQuery};

/// Returns the id of the user with this email, creating an active user if there is none.
pub async fn ensure_user(client: &tokio_postgres::Client, email: &str, name: &str) -> Result<Uuid> {
    let row = client
        .query_one(
            "INSERT INTO users (email, name, status) VALUES ($1, $2, 'active')
             ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email
             RETURNING id",
            &[&email, &name],
        )
        .await?;
    Ok(row.get(0))
}

/// Inserts `count` demo users (`user<N>@example.com`, one in four inactive, created over the
/// past minutes) unless they exist; returns how many were added.
pub async fn seed_demo_users(client: &tokio_postgres::Client, count: i64) -> Result<u64> {
    seed_demo_users_until(client, count, chrono::Utc::now()).await
}

/// Like `seed_demo_users`, with user N created N minutes before `newest`.
pub async fn seed_demo_users_until(
    client: &tokio_postgres::Client,
    count: i64,
    newest: chrono::DateTime<chrono::Utc>,
) -> Result<u64> {
    Ok(client
        .execute(
            "INSERT INTO users (email, name, status, created_at)
             SELECT 'user' || g || '@example.com',
                    'User ' || g,
                    CASE WHEN g % 4 = 0 THEN 'inactive' ELSE 'active' END,
                    $2::timestamptz - make_interval(mins => g::int)
             FROM generate_series(1, $1::bigint) AS g
             ON CONFLICT (email) DO NOTHING",
            &[&count, &newest],
        )
        .await?)
}

/// Up to this many matching users (by the planner's estimate) they are counted exactly; above
/// it the estimate stands: an exact count scans every matching user on the request path (about
/// 60 ms per million here), while the figure only sizes the estimates and the progress, and
/// the worker records the exact number when the export is done.
const EXACT_COUNT_UP_TO: f64 = 100_000.0;

pub async fn count_matching_users(
    client: &tokio_postgres::Client,
    filters: &UserExportFilters,
) -> Result<u64, tokio_postgres::Error> {
    let query = UserQuery::new(filters);
    let plan: serde_json::Value = client
        .query_one(
            &format!(
                "EXPLAIN (FORMAT JSON) SELECT 1 FROM users WHERE {}",
                query.where_clause
            ),
            &query.params(),
        )
        .await?
        .get(0);
    if let Some(estimate) = plan[0]["Plan"]["Plan Rows"].as_f64() {
        if estimate > EXACT_COUNT_UP_TO {
            return Ok(estimate.round() as u64);
        }
    }
    let row = client.query_one(&query.count_sql(), &query.params()).await?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// How long a count of matching users is reused, and for how many distinct filters at most.
const COUNT_REUSE: Duration = Duration::from_secs(5);
const MAX_COUNTED_FILTERS: usize = 4096;

/// Matching-user counts per filter, reused for a few seconds: a count scans the users table,
/// too costly to repeat for every export created under load, and it only sizes the estimate
/// and the progress (the worker records the rows it actually writes).
#[derive(Default)]
pub struct MatchingUsers {
    counted: Mutex<HashMap<UserExportFilters, (Instant, u64)>>,
}

impl MatchingUsers {
    pub async fn count(
        &self,
        client: &tokio_postgres::Client,
        filters: &UserExportFilters,
    ) -> Result<u64, tokio_postgres::Error> {
        if let Some((at, rows)) = self.counted.lock().expect("counts lock").get(filters) {
            if at.elapsed() < COUNT_REUSE {
                return Ok(*rows);
            }
        }
        let rows = count_matching_users(client, filters).await?;
        let mut counted = self.counted.lock().expect("counts lock");
        if counted.len() >= MAX_COUNTED_FILTERS {
            counted.retain(|_, (at, _)| at.elapsed() < COUNT_REUSE);
            if counted.len() >= MAX_COUNTED_FILTERS {
                counted.clear();
            }
        }
        counted.insert(filters.clone(), (Instant::now(), rows));
        Ok(rows)
    }
}
