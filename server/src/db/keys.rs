//! The api_keys table: bearer keys, stored as SHA-256 digests of their secrets, with the
//! scopes they grant. Issued, listed and revoked by the `keys` command.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use exports_spec::auth::TOKEN_PREFIX;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const SCOPE_READ: &str = "exports:read";
pub const SCOPE_WRITE: &str = "exports:write";
pub const SCOPE_WEBHOOKS: &str = "webhooks:manage";
pub const SCOPES: &[&str] = &[SCOPE_READ, SCOPE_WRITE, SCOPE_WEBHOOKS];

pub(crate) fn secret_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn generate_token() -> String {
    let secret: [u8; 32] = rand::random();
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret))
}

/// An unrevoked, unexpired key of an active user.
pub(crate) struct ActiveKey {
    pub key_id: Uuid,
    pub user_id: Uuid,
    pub scopes: Vec<String>,
}

/// The active key whose secret is `token`, if any. Records when the key was used, at most
/// once a minute.
pub(crate) async fn find_active(
    client: &deadpool_postgres::Client,
    token: &str,
) -> super::Result<Option<ActiveKey>> {
    let statement = client
        .prepare_cached(
            "SELECT k.id, k.user_id, k.scopes, \
                    k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' \
             FROM api_keys k JOIN users u ON u.id = k.user_id \
             WHERE k.secret_hash = $1 AND k.revoked_at IS NULL \
               AND (k.expires_at IS NULL OR k.expires_at > now()) AND u.status = 'active'",
        )
        .await?;
    let Some(row) = client.query_opt(&statement, &[&secret_hash(token)]).await? else {
        return Ok(None);
    };
    let key = ActiveKey {
        key_id: row.get(0),
        user_id: row.get(1),
        scopes: row.get(2),
    };
    if row.get::<_, bool>(3) {
        client
            .execute(
                "UPDATE api_keys SET last_used_at = now() WHERE id = $1",
                &[&key.key_id],
            )
            .await?;
    }
    Ok(Some(key))
}

#[derive(Debug)]
pub struct IssuedKey {
    pub id: Uuid,
    /// Shown once: only its digest is stored.
    pub token: String,
}

pub async fn issue_key(
    client: &tokio_postgres::Client,
    user_id: Uuid,
    name: &str,
    scopes: &[String],
    expires_at: Option<DateTime<Utc>>,
) -> super::Result<IssuedKey> {
    if let Some(unknown) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(super::Error::Invalid(format!(
            "unknown scope {unknown:?}; known scopes: {}",
            SCOPES.join(", ")
        )));
    }
    let id = Uuid::new_v4();
    let token = generate_token();
    client
        .execute(
            "INSERT INTO api_keys (id, user_id, name, secret_hash, scopes, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&id, &user_id, &name, &secret_hash(&token), &scopes, &expires_at],
        )
        .await?;
    Ok(IssuedKey { id, token })
}

/// A key as `keys list` shows it: everything but its secret.
#[derive(Debug)]
pub struct KeyInfo {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Every key, or those of the user with `email`, oldest first.
pub async fn list_keys(client: &tokio_postgres::Client, email: Option<&str>) -> super::Result<Vec<KeyInfo>> {
    let rows = client
        .query(
            "SELECT k.id, u.email, k.name, k.scopes, k.created_at, k.expires_at, k.last_used_at, \
                    k.revoked_at \
             FROM api_keys k JOIN users u ON u.id = k.user_id \
             WHERE $1::text IS NULL OR u.email = $1 ORDER BY k.created_at, k.id",
            &[&email],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| KeyInfo {
            id: row.get(0),
            email: row.get(1),
            name: row.get(2),
            scopes: row.get(3),
            created_at: row.get(4),
            expires_at: row.get(5),
            last_used_at: row.get(6),
            revoked_at: row.get(7),
        })
        .collect())
}

/// Returns whether a key was revoked (false: no such key, or already revoked).
pub async fn revoke_key(client: &tokio_postgres::Client, key_id: Uuid) -> super::Result<bool> {
    let revoked = client
        .execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            &[&key_id],
        )
        .await?;
    Ok(revoked == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 43);
        assert_eq!(secret_hash(&a), secret_hash(&a));
        assert_ne!(secret_hash(&a), secret_hash(&b));
    }
}
