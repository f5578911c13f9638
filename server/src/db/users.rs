//! The users table: what is exported, and who requests exports.

use std::time::Duration;

use super::Result;
use uuid::Uuid;

use chrono::{DateTime, Utc};

use crate::model::{UserColumn, UserExportFilters, UserStatus};

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
) -> Result<u64> {
    let query = UserQuery::new(filters);
    let plan: serde_json::Value = client
        .query_one(&query.explain_sql(), &query.params())
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
const MAX_COUNTED_FILTERS: u64 = 4096;

/// Matching-user counts per filter, reused for a few seconds: a count scans the users table,
/// too costly to repeat for every export created under load, and it only sizes the estimate
/// and the progress (the worker records the rows it actually writes).
pub struct MatchingUsers {
    counted: moka::future::Cache<UserExportFilters, u64>,
}

impl Default for MatchingUsers {
    fn default() -> Self {
        Self {
            counted: moka::future::Cache::builder()
                .max_capacity(MAX_COUNTED_FILTERS)
                .time_to_live(COUNT_REUSE)
                .build(),
        }
    }
}

impl MatchingUsers {
    pub async fn count(&self, client: &tokio_postgres::Client, filters: &UserExportFilters) -> Result<u64> {
        if let Some(rows) = self.counted.get(filters).await {
            return Ok(rows);
        }
        let rows = count_matching_users(client, filters).await?;
        self.counted.insert(filters.clone(), rows).await;
        Ok(rows)
    }
}

/// A user's place in an export's order (`ORDER BY created_at, id`): an export resumed after
/// it reads only the users that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserKey {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl UserKey {
    /// The columns an export reads to know each row's key: the file's, then those of the key
    /// that the file leaves out.
    pub fn with_key_columns(columns: &[UserColumn]) -> Vec<UserColumn> {
        let mut read = columns.to_vec();
        for key in [UserColumn::CreatedAt, UserColumn::Id] {
            if !read.contains(&key) {
                read.push(key);
            }
        }
        read
    }

    /// The key of a row read with the columns `read` (`with_key_columns`).
    pub fn of_row(row: &tokio_postgres::Row, read: &[UserColumn]) -> Self {
        let at = |column| {
            (read.iter())
                .position(|read| *read == column)
                .expect("the key's columns are read")
        };
        Self {
            created_at: row.get(at(UserColumn::CreatedAt)),
            id: row.get(at(UserColumn::Id)),
        }
    }
}

/// The `WHERE` clause and parameters of the users an export contains. The same filter counts
/// the rows at creation and streams them in the worker.
#[derive(Debug)]
pub struct UserQuery {
    pub where_clause: String,
    pub created_after: Option<DateTime<Utc>>,
    pub status: Option<&'static str>,
    /// Only the users after this one (a resumed export).
    pub after: Option<UserKey>,
}

impl UserQuery {
    pub fn new(filters: &UserExportFilters) -> Self {
        let mut conditions = Vec::new();
        let created_after = filters
            .created_after
            .map(|day| day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
        let status = filters.status.map(UserStatus::as_str);
        let mut next = 1;
        if created_after.is_some() {
            conditions.push(format!("created_at >= ${next}"));
            next += 1;
        }
        if status.is_some() {
            conditions.push(format!("status = ${next}"));
        }
        let where_clause = if conditions.is_empty() {
            "TRUE".to_string()
        } else {
            conditions.join(" AND ")
        };
        Self {
            where_clause,
            created_after,
            status,
            after: None,
        }
    }

    /// Only the users after `key` in the export's order; the `(created_at, id)` index starts
    /// the scan there.
    pub fn after(mut self, key: Option<UserKey>) -> Self {
        if let Some(key) = key {
            let next = self.params().len() + 1;
            self.where_clause = format!(
                "{} AND (created_at, id) > (${next}, ${})",
                self.where_clause,
                next + 1
            );
            self.after = Some(key);
        }
        self
    }

    pub fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        if let Some(created_after) = &self.created_after {
            params.push(created_after);
        }
        if let Some(status) = &self.status {
            params.push(status);
        }
        if let Some(after) = &self.after {
            params.push(&after.created_at);
            params.push(&after.id);
        }
        params
    }

    pub fn count_sql(&self) -> String {
        format!("SELECT count(*) FROM users WHERE {}", self.where_clause)
    }

    /// The planner's estimate of the count, without the scan (`count_matching_users`).
    fn explain_sql(&self) -> String {
        format!(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM users WHERE {}",
            self.where_clause
        )
    }

    /// The rows of an export: the file's columns, no others, of the matching users, oldest
    /// first (the order of the `(created_at, id)` indexes, so no sort is needed).
    pub fn select_sql(&self, columns: &[UserColumn]) -> String {
        let columns: Vec<&str> = columns.iter().map(|column| column.as_str()).collect();
        format!(
            "SELECT {} FROM users WHERE {} ORDER BY created_at, id",
            columns.join(", "),
            self.where_clause
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn builds_filters_into_numbered_parameters() {
        let all = UserQuery::new(&UserExportFilters::default());
        assert_eq!(all.where_clause, "TRUE");
        assert!(all.params().is_empty());

        let by_status = UserQuery::new(&UserExportFilters {
            created_after: None,
            status: Some(UserStatus::Active),
        });
        assert_eq!(by_status.where_clause, "status = $1");
        assert_eq!(by_status.params().len(), 1);

        let both = UserQuery::new(&UserExportFilters {
            created_after: NaiveDate::from_ymd_opt(2025, 3, 1),
            status: Some(UserStatus::Inactive),
        });
        assert_eq!(both.where_clause, "created_at >= $1 AND status = $2");
        assert_eq!(
            both.created_after.unwrap().to_rfc3339(),
            "2025-03-01T00:00:00+00:00"
        );
        assert_eq!(
            both.count_sql(),
            "SELECT count(*) FROM users WHERE created_at >= $1 AND status = $2"
        );
        assert_eq!(
            all.select_sql(&[UserColumn::Email, UserColumn::CreatedAt]),
            "SELECT email, created_at FROM users WHERE TRUE ORDER BY created_at, id"
        );

        let key = UserKey {
            created_at: Utc::now(),
            id: Uuid::new_v4(),
        };
        let resumed = UserQuery::new(&UserExportFilters {
            created_after: None,
            status: Some(UserStatus::Active),
        })
        .after(Some(key));
        assert_eq!(
            resumed.where_clause,
            "status = $1 AND (created_at, id) > ($2, $3)"
        );
        assert_eq!(resumed.params().len(), 3);
        assert_eq!(
            UserKey::with_key_columns(&[UserColumn::Id, UserColumn::Email]),
            [UserColumn::Id, UserColumn::Email, UserColumn::CreatedAt]
        );
    }
}
