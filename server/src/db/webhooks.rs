//! The webhook_endpoints table: a user's registered endpoints and their signing secrets.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::milliseconds;
use crate::model::{WebhookDelivery, WebhookDeliveryStatus, WebhookEventType};

pub struct EndpointRow {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<WebhookEventType>,
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

impl EndpointRow {
    fn from_row(row: &tokio_postgres::Row) -> Self {
        let event_types: Vec<String> = row.get("event_types");
        Self {
            id: row.get("id"),
            url: row.get("url"),
            event_types: event_types
                .iter()
                .filter_map(|name| WebhookEventType::parse(name))
                .collect(),
            secret: row.get("secret"),
            created_at: row.get("created_at"),
        }
    }
}

const COLUMNS: &str = "id, url, event_types, secret, created_at";

/// Records an endpoint unless the user has `webhooks::MAX_ENDPOINTS_PER_USER` already (then `None`).
/// The user's row is locked for the count, so two concurrent registrations cannot both pass it.
pub async fn create(
    client: &tokio_postgres::Client,
    user_id: Uuid,
    url: &str,
    event_types: &[WebhookEventType],
    secret: &str,
) -> super::Result<Option<EndpointRow>> {
    let names: Vec<&str> = event_types.iter().map(|t| t.as_str()).collect();
    let row = client
        .query_opt(
            &format!(
                "WITH owner AS (SELECT id FROM users WHERE id = $2 FOR UPDATE)
                 INSERT INTO webhook_endpoints (id, user_id, url, event_types, secret)
                 SELECT $1, owner.id, $3, $4, $5 FROM owner
                 WHERE (SELECT count(*) FROM webhook_endpoints
                        WHERE user_id = owner.id AND deleted_at IS NULL) < $6
                 RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::new_v4(),
                &user_id,
                &url,
                &names,
                &secret,
                &(exports_spec::webhooks::MAX_ENDPOINTS_PER_USER as i64),
            ],
        )
        .await?;
    Ok(row.as_ref().map(EndpointRow::from_row))
}

/// The user's endpoints, oldest first.
pub async fn list(client: &tokio_postgres::Client, user_id: Uuid) -> super::Result<Vec<EndpointRow>> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM webhook_endpoints
                 WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at, id"
            ),
            &[&user_id],
        )
        .await?;
    Ok(rows.iter().map(EndpointRow::from_row).collect())
}

/// Deletes the user's endpoint; false when the user has no such endpoint.
pub async fn delete(client: &tokio_postgres::Client, user_id: Uuid, id: Uuid) -> super::Result<bool> {
    let deleted = client
        .execute(
            "UPDATE webhook_endpoints SET deleted_at = now()
             WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
            &[&id, &user_id],
        )
        .await?;
    Ok(deleted == 1)
}

/// Gives the user's endpoint a new secret; `None` when the user has no such endpoint.
pub async fn rotate_secret(
    client: &tokio_postgres::Client,
    user_id: Uuid,
    id: Uuid,
    secret: &str,
) -> super::Result<Option<EndpointRow>> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE webhook_endpoints SET secret = $3
                 WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL
                 RETURNING {COLUMNS}"
            ),
            &[&id, &user_id, &secret],
        )
        .await?;
    Ok(row.as_ref().map(EndpointRow::from_row))
}

/// An outbox entry a worker claimed for one attempt, with its endpoint.
pub struct DueDelivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_type: String,
    /// The export's row as its status change left it.
    pub export: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
    pub url: String,
    pub secret: String,
    pub endpoint_deleted: bool,
    /// The claim's lease (`locked_until`): the outcome is recorded only while the row still
    /// carries it, so an attempt whose row another worker claimed since changes nothing.
    pub lease: DateTime<Utc>,
}

/// A claim looks at the oldest due events of endpoints with a free slot, this many times as
/// many as it may claim, not at every due event: a backlog (an endpoint back after a day down)
/// costs each claim a bounded scan. Events of endpoints already at their limit are passed
/// over in the index, so a slow endpoint's backlog does not fill the window.
const CLAIM_WINDOW: i64 = 4;

/// Any fixed key: claims of deliveries, in every worker process, are made one at a time.
const CLAIM_LOCK_KEY: i64 = 0x7765_6268_6f6f_6b73; // "webhooks" in ASCII

/// Claims up to `limit` due entries for one attempt each, at most `per_endpoint` in flight per
/// endpoint (counting those already claimed, by any worker), oldest first, by setting their
/// lease (`locked_until`, `lease` from now) in one short transaction: no transaction stays
/// open across an attempt, and an endpoint that already has `per_endpoint` attempts in flight
/// is skipped, so a slow endpoint holds only its own slots. Claims are made one at a time
/// (an advisory lock, taken before the statement's snapshot), so the bound holds across
/// workers. A worker that dies mid-attempt leaves its entries due again when their lease ends.
pub async fn claim_due(
    client: &mut tokio_postgres::Client,
    limit: i64,
    per_endpoint: i64,
    lease: std::time::Duration,
) -> super::Result<Vec<DueDelivery>> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&CLAIM_LOCK_KEY])
        .await?;
    let rows = transaction
        .query(
            "WITH in_flight AS (
                 SELECT endpoint_id, count(*) AS attempts FROM webhook_deliveries
                 WHERE locked_until > now() AND delivered_at IS NULL AND gave_up_at IS NULL
                 GROUP BY endpoint_id
             ), due AS (
                 SELECT id, endpoint_id, next_attempt_at FROM webhook_deliveries delivery
                 WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
                   AND (locked_until IS NULL OR locked_until <= now())
                   AND NOT EXISTS (SELECT 1 FROM in_flight
                                   WHERE in_flight.endpoint_id = delivery.endpoint_id
                                     AND in_flight.attempts >= $2)
                 ORDER BY next_attempt_at, id LIMIT $1::bigint * $4::bigint
             ), ranked AS (
                 SELECT id, endpoint_id, next_attempt_at,
                        row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at, id) AS place
                 FROM due
             ), chosen AS (
                 SELECT ranked.id FROM ranked LEFT JOIN in_flight USING (endpoint_id)
                 WHERE ranked.place + coalesce(in_flight.attempts, 0) <= $2
                 ORDER BY ranked.next_attempt_at, ranked.id LIMIT $1
             )
             UPDATE webhook_deliveries delivery
             SET locked_until = now() + $3 * interval '1 millisecond'
             FROM chosen, webhook_endpoints endpoint
             WHERE delivery.id = chosen.id AND endpoint.id = delivery.endpoint_id
               AND delivery.delivered_at IS NULL AND delivery.gave_up_at IS NULL
             RETURNING delivery.id, delivery.endpoint_id, delivery.event_type, delivery.export,
                       delivery.occurred_at, delivery.attempts + 1 AS attempt, endpoint.url,
                       endpoint.secret, endpoint.deleted_at IS NOT NULL AS endpoint_deleted,
                       delivery.locked_until",
            &[&limit, &per_endpoint, &milliseconds(lease), &CLAIM_WINDOW],
        )
        .await?;
    transaction.commit().await?;
    let mut due: Vec<DueDelivery> = rows
        .iter()
        .map(|row| DueDelivery {
            id: row.get("id"),
            endpoint_id: row.get("endpoint_id"),
            event_type: row.get("event_type"),
            export: row.get("export"),
            occurred_at: row.get("occurred_at"),
            attempt: row.get("attempt"),
            url: row.get("url"),
            secret: row.get("secret"),
            endpoint_deleted: row.get("endpoint_deleted"),
            lease: row.get("locked_until"),
        })
        .collect();
    due.sort_by_key(|delivery| delivery.occurred_at);
    Ok(due)
}

/// Delivered: each of the caller's claimed entries whose lease still holds, in one statement;
/// the delays from the events to now.
pub async fn record_delivered(
    client: &impl tokio_postgres::GenericClient,
    delivered: &[Delivered],
) -> super::Result<Vec<std::time::Duration>> {
    let ids: Vec<Uuid> = delivered.iter().map(|d| d.id).collect();
    let statuses: Vec<i32> = delivered.iter().map(|d| i32::from(d.status)).collect();
    let leases: Vec<DateTime<Utc>> = delivered.iter().map(|d| d.lease).collect();
    let attempted: Vec<DateTime<Utc>> = delivered.iter().map(|d| d.attempted_at).collect();
    let rows = client
        .query(
            "UPDATE webhook_deliveries delivery
             SET attempts = delivery.attempts + 1, last_attempt_at = answer.attempted_at,
                 delivered_at = now(), last_status = answer.status, last_error = NULL,
                 locked_until = NULL
             FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::timestamptz[])
                  AS answer (id, status, lease, attempted_at)
             WHERE delivery.id = answer.id AND delivery.locked_until = answer.lease
             RETURNING extract(epoch FROM now() - delivery.occurred_at)::float8",
            &[&ids, &statuses, &leases, &attempted],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| std::time::Duration::from_secs_f64(row.get::<_, f64>(0).max(0.0)))
        .collect())
}

/// A claimed entry's attempt that its endpoint took: the answer's status, the claim's lease and
/// when the attempt was made.
pub struct Delivered {
    pub id: Uuid,
    pub status: u16,
    pub lease: DateTime<Utc>,
    pub attempted_at: DateTime<Utc>,
}

/// A failed attempt of a claimed entry whose lease still holds, to be tried again after
/// `retry_in`, or (`None`) never. False when the lease no longer held (nothing recorded).
pub async fn record_failure(
    client: &impl tokio_postgres::GenericClient,
    (id, lease): (Uuid, DateTime<Utc>),
    attempted_at: DateTime<Utc>,
    status: Option<u16>,
    error: &str,
    retry_in: Option<std::time::Duration>,
) -> super::Result<bool> {
    let recorded = client
        .execute(
            "UPDATE webhook_deliveries
             SET attempts = attempts + 1, last_attempt_at = $2, last_status = $3, last_error = $4,
                 next_attempt_at = CASE WHEN $5::float8 IS NULL THEN next_attempt_at
                                        ELSE now() + $5 * interval '1 millisecond' END,
                 gave_up_at = CASE WHEN $5::float8 IS NULL THEN now() END,
                 locked_until = NULL
             WHERE id = $1 AND locked_until = $6",
            &[
                &id,
                &attempted_at,
                &status.map(i32::from),
                &error,
                &retry_in.map(milliseconds),
                &lease,
            ],
        )
        .await?;
    Ok(recorded == 1)
}

/// Deletes up to `limit` deliveries that ended (delivered, or given up) more than `retention`
/// ago; returns how many.
pub async fn purge_ended_deliveries(
    client: &tokio_postgres::Client,
    retention: std::time::Duration,
    limit: i64,
) -> super::Result<u64> {
    Ok(client
        .execute(
            "DELETE FROM webhook_deliveries WHERE id IN (
                 SELECT id FROM webhook_deliveries
                 WHERE coalesce(delivered_at, gave_up_at) < now() - $1 * interval '1 millisecond'
                 LIMIT $2)",
            &[&milliseconds(retention), &limit],
        )
        .await?)
}

/// Events waiting to be delivered, across the deployment.
pub async fn count_waiting(client: &tokio_postgres::Client) -> super::Result<i64> {
    let row = client
        .query_one(
            "SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NULL AND gave_up_at IS NULL",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The newest deliveries of the user's endpoint, newest first; `None` when the user has no
/// such endpoint (deleted ones included: their last deliveries still explain what happened).
pub async fn recent_deliveries(
    client: &tokio_postgres::Client,
    user_id: Uuid,
    endpoint_id: Uuid,
) -> super::Result<Option<Vec<WebhookDelivery>>> {
    let owned = client
        .query_opt(
            "SELECT 1 FROM webhook_endpoints WHERE id = $1 AND user_id = $2",
            &[&endpoint_id, &user_id],
        )
        .await?;
    if owned.is_none() {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT id, event_type, occurred_at, attempts, last_attempt_at, last_status, last_error,
                    delivered_at, gave_up_at IS NOT NULL AS gave_up
             FROM webhook_deliveries WHERE endpoint_id = $1
             ORDER BY occurred_at DESC, id LIMIT $2",
            &[&endpoint_id, &(exports_spec::webhooks::RECENT_DELIVERIES as i64)],
        )
        .await?;
    Ok(Some(
        rows.iter()
            .filter_map(|row| {
                let delivered_at: Option<DateTime<Utc>> = row.get("delivered_at");
                let status = match (delivered_at, row.get::<_, bool>("gave_up")) {
                    (Some(_), _) => WebhookDeliveryStatus::Delivered,
                    (None, true) => WebhookDeliveryStatus::Failed,
                    (None, false) => WebhookDeliveryStatus::Pending,
                };
                Some(WebhookDelivery {
                    delivery_id: row.get("id"),
                    event_type: WebhookEventType::parse(row.get("event_type"))?,
                    occurred_at: row.get("occurred_at"),
                    status,
                    attempts: row.get::<_, i32>("attempts").max(0) as u64,
                    last_attempt_at: row.get("last_attempt_at"),
                    last_response_status: row.get::<_, Option<i32>>("last_status").map(|s| s.max(0) as u64),
                    last_error: row.get("last_error"),
                    delivered_at,
                })
            })
            .collect(),
    ))
}
