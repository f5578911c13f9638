//! The `exports` table: creating, reading, listing and cancelling exports.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::model::{
    CreateUserExport, Export, ExportFormat, ExportProgress, ExportStatus, ExportType, UserExportFilters,
    UserQuery,
};
use crate::throughput::Rates;

const COLUMNS: &str = "id, format, status, filters, rows_total, rows_written, file_size_bytes, \
                       file_url, error_message, created_at, updated_at, expires_at";

/// An `exports` row as the API reads it.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub id: Uuid,
    pub format: ExportFormat,
    pub status: ExportStatus,
    pub filters: UserExportFilters,
    pub rows_total: u64,
    pub rows_written: u64,
    pub file_size_bytes: Option<u64>,
    /// The object key of the finished file in storage.
    pub file_key: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl ExportRow {
    fn from_row(row: &Row) -> Result<Self, anyhow::Error> {
        let format: String = row.get("format");
        let status: String = row.get("status");
        let count = |column: &str| row.get::<_, i64>(column).max(0) as u64;
        Ok(Self {
            id: row.get("id"),
            format: ExportFormat::parse(&format)
                .ok_or_else(|| anyhow::anyhow!("unknown format {format:?}"))?,
            status: ExportStatus::parse(&status)
                .ok_or_else(|| anyhow::anyhow!("unknown status {status:?}"))?,
            filters: serde_json::from_value(row.get("filters"))?,
            rows_total: count("rows_total"),
            rows_written: count("rows_written"),
            file_size_bytes: row
                .get::<_, Option<i64>>("file_size_bytes")
                .map(|n| n.max(0) as u64),
            file_key: row.get("file_url"),
            error_message: row.get("error_message"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            expires_at: row.get("expires_at"),
        })
    }

    /// The API view; the download link is minted by the caller, not stored.
    pub fn to_api(&self, rates: &Rates) -> Export {
        let percent = if self.status == ExportStatus::Done {
            100.0
        } else if self.rows_total == 0 {
            0.0
        } else {
            (self.rows_written as f64 * 100.0 / self.rows_total as f64).min(100.0)
        };
        let estimated_seconds_remaining = self
            .status
            .is_active()
            .then(|| rates.seconds_for(self.format, self.rows_total.saturating_sub(self.rows_written)));
        Export {
            export_id: self.id,
            export_type: ExportType::Users,
            format: self.format,
            status: self.status,
            filters: self.filters.clone(),
            progress: ExportProgress {
                rows_written: self.rows_written,
                rows_total: self.rows_total,
                percent,
                estimated_seconds_remaining,
            },
            download_url: None,
            download_expires_at: None,
            error_message: self.error_message.clone(),
            file_size_bytes: self.file_size_bytes,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
        }
    }
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

/// The caller already has `limit` pending or processing exports.
#[derive(Debug)]
pub struct LimitReached {
    pub limit: u32,
    /// Format and rows still to write of each active export, to estimate when one finishes.
    pub active: Vec<(ExportFormat, u64)>,
}

/// Records a pending export unless the user is at their limit of active exports; the check
/// and the insert are one statement (`create_export_within_limit`, migration V3), so the limit
/// holds under concurrency.
pub async fn create_export(
    client: &deadpool_postgres::Client,
    user_id: Uuid,
    request: &CreateUserExport,
    rows_total: u64,
    limit: u32,
) -> anyhow::Result<Result<Uuid, LimitReached>> {
    let id = Uuid::new_v4();
    let filters = serde_json::to_value(request.filters.clone().unwrap_or_default())?;
    let statement = client
        .prepare_cached("SELECT create_export_within_limit($1, $2, $3, $4, $5, $6)")
        .await?;
    let limit_param = i32::try_from(limit).unwrap_or(i32::MAX);
    let created: bool = client
        .query_one(
            &statement,
            &[
                &id,
                &user_id,
                &request.format.as_str(),
                &filters,
                &(rows_total as i64),
                &limit_param,
            ],
        )
        .await?
        .get(0);
    if created {
        return Ok(Ok(id));
    }
    let active = client
        .query(
            "SELECT format, rows_total - rows_written FROM exports
             WHERE user_id = $1 AND status IN ('pending', 'processing')",
            &[&user_id],
        )
        .await?
        .iter()
        .map(|row| {
            let format = ExportFormat::parse(row.get(0)).unwrap_or(ExportFormat::Xlsx);
            (format, row.get::<_, i64>(1).max(0) as u64)
        })
        .collect();
    Ok(Err(LimitReached { limit, active }))
}

pub async fn get_export(
    client: &deadpool_postgres::Client,
    user_id: Uuid,
    export_id: Uuid,
) -> anyhow::Result<Option<ExportRow>> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM exports WHERE id = $1 AND user_id = $2"
        ))
        .await?;
    client
        .query_opt(&statement, &[&export_id, &user_id])
        .await?
        .as_ref()
        .map(ExportRow::from_row)
        .transpose()
}

/// An export whatever its owner: for signed download links, which carry no API key.
pub async fn get_export_by_id(
    client: &deadpool_postgres::Client,
    export_id: Uuid,
) -> anyhow::Result<Option<ExportRow>> {
    let statement = client
        .prepare_cached(&format!("SELECT {COLUMNS} FROM exports WHERE id = $1"))
        .await?;
    client
        .query_opt(&statement, &[&export_id])
        .await?
        .as_ref()
        .map(ExportRow::from_row)
        .transpose()
}

/// One page of the user's exports, newest first, strictly after `after` when given.
pub async fn list_exports(
    client: &deadpool_postgres::Client,
    user_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> anyhow::Result<Vec<ExportRow>> {
    let limit = i64::from(limit);
    let rows = match after {
        None => {
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM exports WHERE user_id = $1
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                ))
                .await?;
            client.query(&statement, &[&user_id, &limit]).await?
        }
        Some((created_at, id)) => {
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM exports WHERE user_id = $1 AND (created_at, id) < ($2, $3)
                     ORDER BY created_at DESC, id DESC LIMIT $4"
                ))
                .await?;
            client
                .query(&statement, &[&user_id, &created_at, &id, &limit])
                .await?
        }
    };
    rows.iter().map(ExportRow::from_row).collect()
}

pub enum CancelOutcome {
    Cancelled(ExportRow),
    AlreadyFinished(ExportStatus),
    NotFound,
}

pub async fn cancel_export(
    client: &deadpool_postgres::Client,
    user_id: Uuid,
    export_id: Uuid,
) -> anyhow::Result<CancelOutcome> {
    let cancelled = client
        .query_opt(
            &format!(
                "UPDATE exports SET status = 'cancelled', finished_at = now(), updated_at = now(),
                        lease_expires_at = NULL
                 WHERE id = $1 AND user_id = $2 AND status IN ('pending', 'processing')
                 RETURNING {COLUMNS}"
            ),
            &[&export_id, &user_id],
        )
        .await?;
    if let Some(row) = cancelled {
        return Ok(CancelOutcome::Cancelled(ExportRow::from_row(&row)?));
    }
    Ok(match get_export(client, user_id, export_id).await? {
        Some(row) => CancelOutcome::AlreadyFinished(row.status),
        None => CancelOutcome::NotFound,
    })
}
