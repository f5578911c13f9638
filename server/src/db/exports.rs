//! The `exports` table and the life of an export: every statement on the table, for the API
//! and the worker alike, and the transitions between its statuses.
//!
//! ```text
//!            create                 take                     record_done           expire
//!   (none) ─────────▶ pending ─────────────▶ processing ─────────────────▶ done ─────────▶ expired
//!                      ▲  ▲                    │    │  │ fail
//!                      │  └─── retry_later ────┘    │  └──────▶ failed
//!                      └────── hand_back ───────────┘
//!   pending, processing ── cancel ──▶ cancelled
//! ```
//!
//! `take` also takes over a `processing` export whose lease ran out (its worker died). Every
//! change an attempt makes is conditional on the attempt still holding the row (`attempts`
//! and `processing`), so an attempt that lost it (cancelled, taken over) changes nothing.
//! Statuses are written through `ExportStatus` only; the migrations (history, never edited)
//! spell them too.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::milliseconds;
use crate::db::users::UserKey;
use crate::model::{
    CreateUserExport, ExportAccepted, ExportCompression, ExportFile, ExportFormat, ExportStatus,
    UserExportFilters, WebhookEventType,
};
use crate::telemetry::TraceOrigin;

type Client = deadpool_postgres::Client;

/// A status in a statement, as a SQL literal: a literal rather than a parameter, so that the
/// planner matches the partial index on active exports.
struct Sql(ExportStatus);

impl fmt::Display for Sql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.0.as_str())
    }
}

const PENDING: Sql = Sql(ExportStatus::Pending);
const PROCESSING: Sql = Sql(ExportStatus::Processing);
const DONE: Sql = Sql(ExportStatus::Done);
const FAILED: Sql = Sql(ExportStatus::Failed);
const CANCELLED: Sql = Sql(ExportStatus::Cancelled);
const EXPIRED: Sql = Sql(ExportStatus::Expired);

const COLUMNS: &str = "id, format, columns, compression, status, filters, rows_total, rows_written, \
                       file_size_bytes, file_key, error_message, created_at, updated_at, expires_at";

/// `update` (an `UPDATE exports … WHERE …` without `RETURNING`) and its webhook events, in one
/// statement, so in one transaction (the outbox): a row in `webhook_deliveries` for each of the
/// owner's endpoints that takes `event`, holding the export as the update left it. Returns
/// `COLUMNS` of the rows updated.
fn announcing(event: WebhookEventType, update: &str) -> String {
    let event = event.as_str();
    format!(
        "WITH changed AS ({update} RETURNING *),
              announced AS (
                  INSERT INTO webhook_deliveries (id, endpoint_id, event_type, export)
                  SELECT gen_random_uuid(), endpoint.id, '{event}', to_jsonb(changed)
                  FROM changed JOIN webhook_endpoints endpoint
                    ON endpoint.user_id = changed.user_id AND endpoint.deleted_at IS NULL
                   AND '{event}' = ANY (endpoint.event_types))
         SELECT {COLUMNS} FROM changed"
    )
}

/// How long an `Idempotency-Key` is remembered.
pub(crate) const IDEMPOTENCY_KEYS_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// An `exports` row as the API reads it.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub id: Uuid,
    pub file: ExportFile,
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

/// An `exports` row's columns as stored, read from the table or from an outbox snapshot.
#[derive(serde::Deserialize)]
struct Stored {
    id: Uuid,
    format: String,
    /// Absent in outbox snapshots written before V14, like the exports of then: all columns.
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    compression: Option<String>,
    status: String,
    filters: UserExportFilters,
    rows_total: i64,
    rows_written: i64,
    file_size_bytes: Option<i64>,
    /// `file_url` before V12, in outbox snapshots written then.
    #[serde(alias = "file_url")]
    file_key: Option<String>,
    error_message: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

impl ExportRow {
    fn from_row(row: &Row) -> super::Result<Self> {
        Self::from_stored(Stored {
            id: row.get("id"),
            format: row.get("format"),
            columns: row.get("columns"),
            compression: row.get("compression"),
            status: row.get("status"),
            filters: serde_json::from_value(row.get("filters"))?,
            rows_total: row.get("rows_total"),
            rows_written: row.get("rows_written"),
            file_size_bytes: row.get("file_size_bytes"),
            file_key: row.get("file_key"),
            error_message: row.get("error_message"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            expires_at: row.get("expires_at"),
        })
    }

    /// The row an outbox entry holds (`to_jsonb` of the `exports` row), for the event's body.
    pub fn from_snapshot(snapshot: &serde_json::Value) -> super::Result<Self> {
        Self::from_stored(serde_json::from_value(snapshot.clone())?)
    }

    fn from_stored(stored: Stored) -> super::Result<Self> {
        let count = |n: i64| n.max(0) as u64;
        Ok(Self {
            id: stored.id,
            file: stored_file(&stored.format, stored.columns, stored.compression.as_deref())?,
            status: ExportStatus::parse(&stored.status)
                .ok_or_else(|| super::Error::Unreadable(format!("unknown status {:?}", stored.status)))?,
            filters: stored.filters,
            rows_total: count(stored.rows_total),
            rows_written: count(stored.rows_written),
            file_size_bytes: stored.file_size_bytes.map(count),
            file_key: stored.file_key,
            error_message: stored.error_message,
            created_at: stored.created_at,
            updated_at: stored.updated_at,
            expires_at: stored.expires_at,
        })
    }
}

/// An export's file from its row: `format`, `columns` (`NULL`: all) and `compression`
/// (absent before V14: none).
fn stored_file(
    format: &str,
    columns: Option<Vec<String>>,
    compression: Option<&str>,
) -> super::Result<ExportFile> {
    let unreadable = |what: &str| super::Error::Unreadable(what.to_string());
    Ok(ExportFile {
        format: ExportFormat::parse(format)
            .ok_or_else(|| unreadable(&format!("unknown format {format:?}")))?,
        columns: ExportFile::columns_from_stored(columns).ok_or_else(|| unreadable("an unknown column"))?,
        compression: match compression {
            None => ExportCompression::None,
            Some(name) => ExportCompression::parse(name)
                .ok_or_else(|| unreadable(&format!("unknown compression {name:?}")))?,
        },
    })
}

/// The caller already has `limit` pending or processing exports.
#[derive(Debug)]
pub(crate) struct LimitReached {
    pub limit: u32,
    /// Format and rows still to write of each active export, to estimate when one finishes.
    pub active: Vec<(ExportFormat, u64)>,
}

/// An export to record.
pub(crate) struct NewExport<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub request: &'a CreateUserExport,
    pub rows_total: u64,
    /// Pending or processing exports the user may have at once.
    pub limit: u32,
}

/// A create's `Idempotency-Key`, its request's fingerprint, and the answer to remember.
pub(crate) struct Idempotent<'a> {
    pub key: &'a str,
    pub fingerprint: [u8; 32],
    pub answer: &'a ExportAccepted,
}

pub(crate) enum Created {
    /// Recorded now.
    New,
    /// The key's first request already created it: that request's answer.
    Replayed(ExportAccepted),
    /// The key was used with a different request.
    KeyReused,
    /// A request with the key holds it right now.
    KeyInUse,
    LimitReached(LimitReached),
}

/// Records a pending export unless the user is at their limit of active exports; the check
/// and the insert are one statement (`create_export_within_limit`, migration V3, with the
/// file's options since V14), so the limit holds under concurrency. With an
/// `Idempotency-Key`, `create_export_idempotently` (V6, V14) first answers a replay, a reused
/// key or a key in use, and remembers the key with the export, in the same statement.
pub(crate) async fn create(
    client: &Client,
    export: NewExport<'_>,
    idempotent: Option<Idempotent<'_>>,
) -> super::Result<Created> {
    let filters = serde_json::to_value(export.request.filters.clone().unwrap_or_default())?;
    let limit = i32::try_from(export.limit).unwrap_or(i32::MAX);
    let file = ExportFile::asked(export.request);
    let (columns, compression) = (file.stored_columns(), file.compression.as_str());
    let (id, user_id, format, rows_total) = (
        export.id,
        export.user_id,
        export.request.format.as_str(),
        export.rows_total as i64,
    );
    let created = match idempotent {
        None => {
            let statement = client
                .prepare_cached("SELECT create_export_within_limit($1, $2, $3, $4, $5, $6, $7, $8)")
                .await?;
            let created: bool = client
                .query_one(
                    &statement,
                    &[
                        &id,
                        &user_id,
                        &format,
                        &filters,
                        &rows_total,
                        &limit,
                        &columns,
                        &compression,
                    ],
                )
                .await?
                .get(0);
            if created {
                Created::New
            } else {
                Created::LimitReached(LimitReached {
                    limit: export.limit,
                    active: Vec::new(),
                })
            }
        }
        Some(Idempotent {
            key,
            fingerprint,
            answer,
        }) => {
            let statement = client
                .prepare_cached(
                    "SELECT outcome, response FROM create_export_idempotently(
                         $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 * interval '1 second', $11, $12)",
                )
                .await?;
            let kept = IDEMPOTENCY_KEYS_KEPT.as_secs_f64();
            let row = client
                .query_one(
                    &statement,
                    &[
                        &id,
                        &user_id,
                        &format,
                        &filters,
                        &rows_total,
                        &limit,
                        &key,
                        &fingerprint.as_slice(),
                        &serde_json::to_value(answer)?,
                        &kept,
                        &columns,
                        &compression,
                    ],
                )
                .await?;
            match row.get::<_, &str>(0) {
                "created" => Created::New,
                "replayed" => Created::Replayed(serde_json::from_value(row.get(1))?),
                "reused" => Created::KeyReused,
                "in_use" => Created::KeyInUse,
                "limit" => Created::LimitReached(LimitReached {
                    limit: export.limit,
                    active: Vec::new(),
                }),
                outcome => {
                    return Err(super::Error::Unreadable(format!(
                        "create_export_idempotently answered {outcome:?}"
                    )))
                }
            }
        }
    };
    let Created::LimitReached(mut reached) = created else {
        return Ok(created);
    };
    reached.active = client
        .query(
            &format!(
                "SELECT format, rows_total - rows_written FROM exports
                 WHERE user_id = $1 AND status IN ({PENDING}, {PROCESSING})"
            ),
            &[&user_id],
        )
        .await?
        .iter()
        .map(|row| {
            let format = ExportFormat::parse(row.get(0)).unwrap_or(ExportFormat::Xlsx);
            (format, row.get::<_, i64>(1).max(0) as u64)
        })
        .collect();
    Ok(Created::LimitReached(reached))
}

/// Forgets the `Idempotency-Key`s older than `kept`; how many.
pub(crate) async fn purge_idempotency_keys(client: &Client, kept: Duration) -> super::Result<u64> {
    Ok(client
        .execute(
            "DELETE FROM idempotency_keys WHERE created_at < now() - $1 * interval '1 second'",
            &[&kept.as_secs_f64()],
        )
        .await?)
}

/// The user's export, if they have one of that id.
pub(crate) async fn get(client: &Client, user_id: Uuid, export_id: Uuid) -> super::Result<Option<ExportRow>> {
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
pub(crate) async fn get_whoever_owns(client: &Client, export_id: Uuid) -> super::Result<Option<ExportRow>> {
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
pub(crate) async fn list(
    client: &Client,
    user_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> super::Result<Vec<ExportRow>> {
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

/// (`pub` for `cargo xtask bench webhooks`, whose events are cancels.)
pub async fn cancel(client: &Client, user_id: Uuid, export_id: Uuid) -> super::Result<CancelOutcome> {
    let cancelled = client
        .query_opt(
            &announcing(
                WebhookEventType::ExportCancelled,
                &format!(
                    "UPDATE exports SET status = {CANCELLED}, finished_at = now(), updated_at = now(),
                                lease_expires_at = NULL
                         WHERE id = $1 AND user_id = $2 AND status IN ({PENDING}, {PROCESSING})"
                ),
            ),
            &[&export_id, &user_id],
        )
        .await?;
    if let Some(row) = cancelled {
        return Ok(CancelOutcome::Cancelled(ExportRow::from_row(&row)?));
    }
    Ok(match get(client, user_id, export_id).await? {
        Some(row) => CancelOutcome::AlreadyFinished(row.status),
        None => CancelOutcome::NotFound,
    })
}

/// A pending export whose retry, if any, is due: when it may be taken (`take`) and when it
/// should be on the queue (`due`). `of` is the table's alias with its dot, or `""`.
fn pending_and_due(of: &str) -> String {
    format!("{of}status = {PENDING} AND ({of}retry_at IS NULL OR {of}retry_at <= now())")
}

/// The advisory lock that takes one at a time ("take" in ASCII).
const TAKE_LOCK_KEY: i64 = 0x7461_6b65;

/// What `take` found.
pub(crate) enum Taken {
    /// This worker now holds the export, as attempt `attempt`.
    Attempt {
        attempt: i32,
        file: ExportFile,
        filters: UserExportFilters,
        /// What an earlier attempt may have left in storage.
        left: Option<LeftUpload>,
        /// The trace the attempt joins (empty when tracing was off at its create).
        trace: TraceOrigin,
    },
    /// Another worker holds it, with a lease still running.
    HeldElsewhere,
    /// Due, but its owner already has an export running while another user, with none
    /// running, waits: it goes back to the end of the queue.
    Deferred,
    /// Nothing to do: finished, cancelled, gone, or a retry not due yet.
    Nothing,
}

/// The upload an attempt started (its object key, and on S3 its multipart upload's id), kept
/// in the row until its export's prefix is known clean (migration V10), and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeftUpload {
    pub key: String,
    pub upload_id: Option<String>,
    /// Where the next attempt can go on from (migration V15), when the row says; boxed, as
    /// it is seldom there.
    pub checkpoint: Option<Box<Checkpoint>>,
}

/// How far an attempt's upload got: its parts completed from the first without a gap, with
/// the file's bytes and rows in them and the last of those rows. Recorded as each part is
/// completed; the next attempt goes on after it (`worker::jobs`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Each part's entity tag, in order.
    pub parts: Vec<String>,
    pub bytes: u64,
    pub rows: u64,
    /// The last row in those parts.
    pub after: UserKey,
}

impl LeftUpload {
    fn from_row(row: &tokio_postgres::Row) -> Option<Self> {
        // A checkpoint this version cannot read is none: the file starts over.
        let checkpoint = (row
            .try_get::<_, Option<serde_json::Value>>("checkpoint")
            .ok()
            .flatten())
        .and_then(|stored| serde_json::from_value(stored).ok());
        Some(Self {
            key: row.get::<_, Option<String>>("upload_key")?,
            upload_id: row.get("upload_id"),
            checkpoint,
        })
    }

    /// `(key, upload id)` of its multipart upload, if it opened one.
    pub fn multipart(&self) -> Option<(&str, &str)> {
        Some((&self.key, self.upload_id.as_deref()?))
    }
}

/// Takes an export for a new attempt, `pending` and due, or `processing` with its lease run
/// out, holding it for `lease`. A pending export waits (`Deferred`) while its owner has an
/// export running and another user, with none running, has one due: no user takes every
/// worker while others wait. Only in favour of a user who would be taken, so two users with
/// exports running never defer to each other.
/// `fair` false takes it regardless (`WorkerArgs::fifo`, for comparisons).
pub(crate) async fn take(
    client: &mut Client,
    export_id: Uuid,
    lease: Duration,
    fair: bool,
) -> super::Result<Taken> {
    let running = |owner: &str| {
        format!(
            "EXISTS (SELECT 1 FROM exports running WHERE running.user_id = {owner}
                     AND running.status = {PROCESSING} AND running.lease_expires_at >= now())"
        )
    };
    let fair = if !fair {
        "TRUE".to_string()
    } else {
        format!(
            "NOT ({mine} AND EXISTS (
             SELECT 1 FROM exports waiting
             WHERE {waiting_due} AND waiting.user_id <> exports.user_id
               AND NOT {theirs}))",
            mine = running("exports.user_id"),
            theirs = running("waiting.user_id"),
            waiting_due = pending_and_due("waiting."),
        )
    };
    let due = pending_and_due("");
    // Takes are one at a time across the deployment (they last a round trip), so that two
    // taken at once cannot both find their owner with none running; the UPDATE after the
    // lock sees every take committed before it (READ COMMITTED).
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&TAKE_LOCK_KEY])
        .await?;
    let taken = transaction
        .query_opt(
            &format!(
                "UPDATE exports
                 SET status = {PROCESSING}, attempts = attempts + 1,
                     lease_expires_at = now() + $2 * interval '1 millisecond',
                     started_at = now(), retry_at = NULL, updated_at = now()
                 WHERE id = $1
                   AND (({due} AND {fair})
                        OR (status = {PROCESSING} AND lease_expires_at < now()))
                 RETURNING attempts, format, columns, compression, filters, upload_key, upload_id,
                           checkpoint, traceparent, request_id, first_attempt_traceparent"
            ),
            &[&export_id, &milliseconds(lease)],
        )
        .await?;
    transaction.commit().await?;
    if let Some(row) = taken {
        return Ok(Taken::Attempt {
            attempt: row.get("attempts"),
            file: stored_file(row.get("format"), row.get("columns"), row.get("compression"))?,
            filters: serde_json::from_value(row.get("filters"))?,
            left: LeftUpload::from_row(&row),
            trace: TraceOrigin {
                traceparent: row.get("traceparent"),
                request_id: row.get("request_id"),
                first_attempt: row.get("first_attempt_traceparent"),
            },
        });
    }
    let state = client
        .query_opt(
            &format!(
                "SELECT status = {PROCESSING} FROM exports
                 WHERE id = $1
                   AND ((status = {PROCESSING} AND lease_expires_at >= now())
                        OR ({due}))"
            ),
            &[&export_id],
        )
        .await?;
    Ok(match state.map(|row| row.get::<_, bool>(0)) {
        Some(true) => Taken::HeldElsewhere,
        // Due, yet not taken: the rule above.
        Some(false) => Taken::Deferred,
        None => Taken::Nothing,
    })
}

/// Records the rows an attempt has written and extends its lease; false when the attempt no
/// longer holds the export. The rows recorded never go down: an attempt that starts a file
/// over shows the furthest an earlier one got until it passes it.
pub(crate) async fn renew(
    client: &Client,
    export_id: Uuid,
    attempt: i32,
    rows_written: u64,
    lease: Duration,
) -> super::Result<bool> {
    let updated = client
        .execute(
            &format!(
                "UPDATE exports SET rows_written = GREATEST(rows_written, $3), updated_at = now(),
                        lease_expires_at = now() + $4 * interval '1 millisecond'
                 WHERE id = $1 AND attempts = $2 AND status = {PROCESSING}"
            ),
            &[&export_id, &attempt, &(rows_written as i64), &milliseconds(lease)],
        )
        .await?;
    Ok(updated == 1)
}

/// Where the export's trace began (its create request), for its attempts to join
/// (`telemetry`); written before the job is queued.
pub(crate) async fn record_trace(
    client: &Client,
    export_id: Uuid,
    origin: &TraceOrigin,
) -> super::Result<()> {
    client
        .execute(
            "UPDATE exports SET traceparent = $2, request_id = $3 WHERE id = $1",
            &[&export_id, &origin.traceparent, &origin.request_id],
        )
        .await?;
    Ok(())
}

/// The span of the export's first attempt, which later attempts link to: recorded by the
/// first attempt that gets this far, conditional on it still holding the export.
pub(crate) async fn record_first_attempt(
    client: &Client,
    export_id: Uuid,
    attempt: i32,
    traceparent: &str,
) -> super::Result<()> {
    client
        .execute(
            &format!(
                "UPDATE exports SET first_attempt_traceparent = $3
                 WHERE id = $1 AND attempts = $2 AND status = {PROCESSING}
                   AND first_attempt_traceparent IS NULL"
            ),
            &[&export_id, &attempt, &traceparent],
        )
        .await?;
    Ok(())
}

/// The upload the attempt writes: its object `key` and, once the store has opened it, its
/// multipart `upload_id`, in place of what an earlier attempt left (cleaned up before), with
/// no checkpoint yet. False when the attempt no longer holds the export (an upload it opened
/// is then nobody's, and its opener aborts it).
pub(crate) async fn record_upload(
    client: &Client,
    export_id: Uuid,
    attempt: i32,
    key: &str,
    upload_id: Option<&str>,
) -> super::Result<bool> {
    let updated = client
        .execute(
            &format!(
                "UPDATE exports SET upload_key = $3, upload_id = $4, checkpoint = NULL
                 WHERE id = $1 AND attempts = $2 AND status = {PROCESSING}"
            ),
            &[&export_id, &attempt, &key, &upload_id],
        )
        .await?;
    Ok(updated == 1)
}

/// Nothing of this upload is in storage any more: the row stops pointing at it. Named by its
/// key and its id, since an attempt that goes on with an earlier attempt's upload shares its
/// key: another upload is never forgotten.
pub(crate) async fn forget_upload(
    client: &Client,
    export_id: Uuid,
    upload: &LeftUpload,
) -> super::Result<()> {
    client
        .execute(
            "UPDATE exports SET upload_key = NULL, upload_id = NULL, checkpoint = NULL
             WHERE id = $1 AND upload_key = $2 AND upload_id IS NOT DISTINCT FROM $3",
            &[&export_id, &upload.key, &upload.upload_id],
        )
        .await?;
    Ok(())
}

/// Records how far the attempt's upload `upload_id` got, as one of its parts is completed;
/// false when the attempt no longer holds the export, or the row names another upload.
pub(crate) async fn record_checkpoint(
    client: &Client,
    export_id: Uuid,
    attempt: i32,
    upload_id: &str,
    checkpoint: &Checkpoint,
) -> super::Result<bool> {
    let updated = client
        .execute(
            &format!(
                "UPDATE exports SET checkpoint = $4, rows_written = GREATEST(rows_written, $5),
                        updated_at = now()
                 WHERE id = $1 AND attempts = $2 AND status = {PROCESSING} AND upload_id = $3"
            ),
            &[
                &export_id,
                &attempt,
                &upload_id,
                &serde_json::to_value(checkpoint)?,
                &(checkpoint.rows as i64),
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// Whether the export may still go on from `upload_id`: pending or processing, the row naming
/// that upload. An attempt that lost the export leaves such an upload to the next attempt.
pub(crate) async fn upload_wanted(client: &Client, export_id: Uuid, upload_id: &str) -> super::Result<bool> {
    let row = client
        .query_opt(
            &format!(
                "SELECT 1 FROM exports
                 WHERE id = $1 AND upload_id = $2 AND status IN ({PENDING}, {PROCESSING})"
            ),
            &[&export_id, &upload_id],
        )
        .await?;
    Ok(row.is_some())
}

/// Exports in a final status whose attempts may have left something in storage, untouched
/// for `grace` (an attempt that lost the export notices within a lease and cleans up after
/// itself): each with the object to keep (a `done` export's file) and what was left.
pub(crate) async fn uploads_left(
    client: &Client,
    grace: Duration,
    limit: i64,
) -> super::Result<Vec<(Uuid, Option<String>, LeftUpload)>> {
    let rows = client
        .query(
            &format!(
                "SELECT id, CASE WHEN status = {DONE} THEN file_key END AS keep, upload_key, upload_id
                 FROM exports
                 WHERE upload_key IS NOT NULL
                   AND status IN ({DONE}, {FAILED}, {CANCELLED}, {EXPIRED})
                   AND updated_at < now() - $1 * interval '1 millisecond'
                 ORDER BY updated_at LIMIT $2"
            ),
            &[&milliseconds(grace), &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| Some((row.get("id"), row.get("keep"), LeftUpload::from_row(row)?)))
        .collect())
}

/// The file an attempt finished.
pub(crate) struct FinishedFile<'a> {
    pub key: &'a str,
    pub rows: u64,
    pub size: u64,
    /// How long it is kept.
    pub ttl: Duration,
}

/// `done`, with its file; false when the attempt no longer held the export (its file is then
/// nobody's).
pub(crate) async fn record_done(
    client: &Client,
    export_id: Uuid,
    attempt: i32,
    file: FinishedFile<'_>,
) -> super::Result<bool> {
    let updated = client
        .execute(
            &announcing(
                WebhookEventType::ExportDone,
                &format!(
                    "UPDATE exports SET status = {DONE}, file_key = $3, rows_written = $4, rows_total = $4,
                                file_size_bytes = $5, error_message = NULL, lease_expires_at = NULL,
                                upload_key = NULL, upload_id = NULL, checkpoint = NULL,
                                finished_at = now(), updated_at = now(),
                                expires_at = now() + $6 * interval '1 millisecond'
                         WHERE id = $1 AND attempts = $2 AND status = {PROCESSING}"
                ),
            ),
            &[
                &export_id,
                &attempt,
                &file.key,
                &(file.rows as i64),
                &(file.size as i64),
                &milliseconds(file.ttl),
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// A failed attempt to be tried again: `pending`, due after `backoff`, to be queued again
/// by the sweeper.
pub(crate) async fn retry_later(
    client: &Client,
    export_id: Uuid,
    attempt: i32,
    backoff: Duration,
) -> super::Result<()> {
    client
        .execute(
            &format!(
                "UPDATE exports SET status = {PENDING}, lease_expires_at = NULL,
                        retry_at = now() + $3 * interval '1 millisecond', queued_at = NULL,
                        updated_at = now()
                 WHERE id = $1 AND attempts = $2 AND status = {PROCESSING}"
            ),
            &[&export_id, &attempt, &milliseconds(backoff)],
        )
        .await?;
    Ok(())
}

/// `failed` for good, with the message its user sees.
pub(crate) async fn fail(client: &Client, export_id: Uuid, attempt: i32, message: &str) -> super::Result<()> {
    client
        .execute(
            &announcing(
                WebhookEventType::ExportFailed,
                &format!(
                    "UPDATE exports SET status = {FAILED}, error_message = $3, lease_expires_at = NULL,
                                finished_at = now(), updated_at = now()
                         WHERE id = $1 AND attempts = $2 AND status = {PROCESSING}"
                ),
            ),
            &[&export_id, &attempt, &message],
        )
        .await?;
    Ok(())
}

/// Gives an interrupted attempt back: `pending` again, the attempt not counted, marked as
/// queued now (the caller queues it), its checkpoint kept for the next attempt; None when the
/// attempt no longer held the export.
/// Its matching users (for its lane), when it was handed back.
pub(crate) async fn hand_back(client: &Client, export_id: Uuid, attempt: i32) -> super::Result<Option<u64>> {
    let updated = client
        .query_opt(
            &format!(
                "UPDATE exports SET status = {PENDING}, attempts = attempts - 1, lease_expires_at = NULL,
                        queued_at = now(), updated_at = now()
                 WHERE id = $1 AND attempts = $2 AND status = {PROCESSING}
                 RETURNING rows_total"
            ),
            &[&export_id, &attempt],
        )
        .await?;
    Ok(updated.map(|row| row.get::<_, i64>(0).max(0) as u64))
}

/// Exports that should have a job on the queue (at most 1,000, oldest first), with their
/// matching users (for their lane): `pending` and due, not queued in the last `grace`, or
/// `processing` with the lease run out.
pub(crate) async fn due(client: &Client, grace: Duration) -> super::Result<Vec<(Uuid, u64)>> {
    let due = pending_and_due("");
    let rows = client
        .query(
            &format!(
                "SELECT id, rows_total FROM exports
                 WHERE ({due}
                        AND COALESCE(queued_at, created_at) < now() - $1 * interval '1 millisecond')
                    OR (status = {PROCESSING} AND lease_expires_at < now())
                 ORDER BY created_at LIMIT 1000"
            ),
            &[&milliseconds(grace)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get::<_, i64>(1).max(0) as u64))
        .collect())
}

pub(crate) async fn mark_queued(client: &Client, export_ids: &[Uuid]) -> super::Result<()> {
    client
        .execute(
            "UPDATE exports SET queued_at = now() WHERE id = ANY($1)",
            &[&export_ids],
        )
        .await?;
    Ok(())
}

/// `done` exports past `expires_at` (at most `limit`, oldest first).
pub(crate) async fn past_expiry(client: &Client, limit: i64) -> super::Result<Vec<Uuid>> {
    let rows = client
        .query(
            &format!(
                "SELECT id FROM exports WHERE status = {DONE} AND expires_at <= now()
                 ORDER BY expires_at LIMIT $1"
            ),
            &[&limit],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// `expired`, once its file is deleted.
pub(crate) async fn expire(client: &Client, export_id: Uuid) -> super::Result<()> {
    client
        .execute(
            &announcing(
                WebhookEventType::ExportExpired,
                &format!(
                    "UPDATE exports SET status = {EXPIRED}, file_key = NULL, upload_key = NULL,
                                    upload_id = NULL, checkpoint = NULL, updated_at = now()
                         WHERE id = $1 AND status = {DONE}"
                ),
            ),
            &[&export_id],
        )
        .await?;
    Ok(())
}

/// Exports waiting for a worker.
pub(crate) async fn count_pending(client: &tokio_postgres::Client) -> super::Result<i64> {
    let row = client
        .query_one(
            &format!("SELECT count(*) FROM exports WHERE status = {PENDING}"),
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Rows per second of the exports finished in the last day, per format (the 50 newest of
/// each), for those that have any.
pub(crate) async fn recent_throughput(
    client: &tokio_postgres::Client,
) -> super::Result<Vec<(ExportFormat, f64)>> {
    let rows = client
        .query(
            &format!(
                "SELECT format, sum(rows_written)::float8 / sum(extract(epoch FROM finished_at - started_at))::float8
                 FROM (
                     SELECT format, rows_written, started_at, finished_at,
                            row_number() OVER (PARTITION BY format ORDER BY finished_at DESC) AS n
                     FROM exports
                     WHERE status = {DONE} AND started_at IS NOT NULL AND finished_at > started_at
                       AND finished_at > now() - interval '1 day'
                 ) AS recent
                 WHERE n <= 50
                 GROUP BY format"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let format = ExportFormat::parse(row.get(0))?;
            let rate: Option<f64> = row.get(1);
            Some((format, rate?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_snapshots_from_before_v12_are_read_too() {
        let snapshot = |column: &str| {
            serde_json::json!({
                "id": Uuid::nil(), "format": "csv", "status": "done", "filters": {},
                "rows_total": 3, "rows_written": 3, "file_size_bytes": 10, column: "exports/k.csv",
                "error_message": null, "created_at": "2026-12-04T00:00:00Z",
                "updated_at": "2026-12-04T00:00:00Z", "expires_at": null
            })
        };
        for column in ["file_key", "file_url"] {
            let row = ExportRow::from_snapshot(&snapshot(column)).unwrap();
            assert_eq!(row.file_key.as_deref(), Some("exports/k.csv"), "{column}");
            // Before V14: every column, uncompressed.
            assert_eq!(row.file.columns, crate::model::UserColumn::ALL);
            assert_eq!(row.file.compression, ExportCompression::None);
        }
    }

    #[test]
    fn statuses_are_sql_literals_of_their_wire_names() {
        assert_eq!(PENDING.to_string(), "'pending'");
        assert_eq!(CANCELLED.to_string(), "'cancelled'");
        assert_eq!(
            format!("status IN ({PENDING}, {PROCESSING})"),
            "status IN ('pending', 'processing')"
        );
    }
}
