//! The webhook_endpoints table: a user's registered endpoints and their signing secrets.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{WebhookEndpoint, WebhookEventType};

/// Endpoints a user may have at once.
pub const MAX_ENDPOINTS_PER_USER: i64 = 10;

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

    pub fn to_api(&self) -> WebhookEndpoint {
        WebhookEndpoint {
            endpoint_id: self.id,
            url: self.url.clone(),
            event_types: self.event_types.clone(),
            created_at: self.created_at,
        }
    }
}

const COLUMNS: &str = "id, url, event_types, secret, created_at";

/// Records an endpoint unless the user has `MAX_ENDPOINTS_PER_USER` already (then `None`).
/// The user's row is locked for the count, so two concurrent registrations cannot both pass it.
pub async fn create(
    client: &tokio_postgres::Client,
    user_id: Uuid,
    url: &str,
    event_types: &[WebhookEventType],
    secret: &str,
) -> Result<Option<EndpointRow>, tokio_postgres::Error> {
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
                &MAX_ENDPOINTS_PER_USER,
            ],
        )
        .await?;
    Ok(row.as_ref().map(EndpointRow::from_row))
}

/// The user's endpoints, oldest first.
pub async fn list(
    client: &tokio_postgres::Client,
    user_id: Uuid,
) -> Result<Vec<EndpointRow>, tokio_postgres::Error> {
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
pub async fn delete(
    client: &tokio_postgres::Client,
    user_id: Uuid,
    id: Uuid,
) -> Result<bool, tokio_postgres::Error> {
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
) -> Result<Option<EndpointRow>, tokio_postgres::Error> {
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
