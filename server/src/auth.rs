//! Bearer API keys: issued by the admin command, stored as SHA-256 digests, with scopes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use exports_spec::auth::TOKEN_PREFIX;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;

pub const SCOPE_READ: &str = "exports:read";
pub const SCOPE_WRITE: &str = "exports:write";
pub const SCOPE_WEBHOOKS: &str = "webhooks:manage";
pub const SCOPES: &[&str] = &[SCOPE_READ, SCOPE_WRITE, SCOPE_WEBHOOKS];

#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub key_id: Uuid,
    pub scopes: Vec<String>,
}

impl Principal {
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(scope))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header, read as the mock reads it.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<&str, ApiError> {
    exports_spec::auth::bearer_token(headers)
        .and_then(exports_spec::auth::ours)
        .map_err(ApiError::unauthorized)
}

fn secret_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn generate_token() -> String {
    let secret: [u8; 32] = rand::random();
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret))
}

/// Looks up the key of a token `bearer_token` returned: unrevoked, unexpired, and its user
/// active. Records when the key was used, at most once a minute.
pub async fn authenticate(client: &deadpool_postgres::Client, token: &str) -> Result<Principal, ApiError> {
    let statement = client
        .prepare_cached(
            "SELECT k.id, k.user_id, k.scopes, \
                    k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' \
             FROM api_keys k JOIN users u ON u.id = k.user_id \
             WHERE k.secret_hash = $1 AND k.revoked_at IS NULL \
               AND (k.expires_at IS NULL OR k.expires_at > now()) AND u.status = 'active'",
        )
        .await
        .map_err(ApiError::internal)?;
    let row = client
        .query_opt(&statement, &[&secret_hash(token)])
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(unknown_key)?;
    let principal = Principal {
        key_id: row.get(0),
        user_id: row.get(1),
        scopes: row.get(2),
    };
    if row.get::<_, bool>(3) {
        client
            .execute(
                "UPDATE api_keys SET last_used_at = now() WHERE id = $1",
                &[&principal.key_id],
            )
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(principal)
}

/// Keys PostgreSQL did not know, remembered for a while so that a client repeating one costs
/// no query. Safe to remember: keys are random, so an unknown key never becomes valid, and a
/// revoked one stays revoked.
pub struct RejectedKeys {
    remembered: Mutex<HashMap<Vec<u8>, Instant>>,
}

impl RejectedKeys {
    const REMEMBERED_FOR: Duration = Duration::from_secs(60);
    /// Bounds the memory a flood of distinct bad keys can take (about 100 bytes each).
    const CAPACITY: usize = 10_000;

    pub fn new() -> Self {
        Self {
            remembered: Mutex::new(HashMap::new()),
        }
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Instant>> {
        self.remembered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A `401` for a key rejected recently, without asking PostgreSQL.
    pub fn check(&self, token: &str) -> Result<(), ApiError> {
        let rejected_at = self.remembered().get(&secret_hash(token)).copied();
        match rejected_at {
            Some(at) if at.elapsed() < Self::REMEMBERED_FOR => Err(unknown_key()),
            _ => Ok(()),
        }
    }

    pub fn remember(&self, token: &str) {
        let mut remembered = self.remembered();
        if remembered.len() >= Self::CAPACITY {
            remembered.retain(|_, at| at.elapsed() < Self::REMEMBERED_FOR);
            if remembered.len() >= Self::CAPACITY {
                remembered.clear();
            }
        }
        remembered.insert(secret_hash(token), Instant::now());
    }
}

impl Default for RejectedKeys {
    fn default() -> Self {
        Self::new()
    }
}

fn unknown_key() -> ApiError {
    ApiError::unauthorized(exports_spec::auth::UNKNOWN)
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
) -> Result<IssuedKey> {
    if let Some(unknown) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        bail!("unknown scope {unknown:?}; known scopes: {}", SCOPES.join(", "));
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
pub async fn list_keys(client: &tokio_postgres::Client, email: Option<&str>) -> Result<Vec<KeyInfo>> {
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
pub async fn revoke_key(client: &tokio_postgres::Client, key_id: Uuid) -> Result<bool> {
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

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn reads_bearer_tokens() {
        assert_eq!(bearer_token(&headers("Bearer exk_abc")).unwrap(), "exk_abc");
        assert_eq!(bearer_token(&headers("bearer  exk_abc ")).unwrap(), "exk_abc");
        for bad in ["exk_abc", "Basic dXNlcjpwYXNz", "Bearer ", "Bearer", "Bearer abc"] {
            let error = bearer_token(&headers(bad)).unwrap_err();
            assert_eq!(error.status(), http::StatusCode::UNAUTHORIZED, "{bad}");
        }
        assert_eq!(
            bearer_token(&http::HeaderMap::new()).unwrap_err().error.details[0].issue,
            "is missing"
        );
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 43);
        assert_eq!(secret_hash(&a), secret_hash(&a));
        assert_ne!(secret_hash(&a), secret_hash(&b));
    }

    #[test]
    fn rejected_keys_are_remembered() {
        let rejected = RejectedKeys::new();
        assert!(rejected.check("exk_unknown").is_ok());
        rejected.remember("exk_unknown");
        assert_eq!(
            rejected.check("exk_unknown").unwrap_err().status(),
            http::StatusCode::UNAUTHORIZED
        );
        assert!(rejected.check("exk_other").is_ok());
        for n in 0..RejectedKeys::CAPACITY + 5 {
            rejected.remember(&format!("exk_{n}"));
        }
        assert!(rejected.remembered().len() <= RejectedKeys::CAPACITY);
    }

    #[test]
    fn scopes_are_checked() {
        let principal = Principal {
            user_id: Uuid::nil(),
            key_id: Uuid::nil(),
            scopes: vec![SCOPE_READ.into()],
        };
        assert!(principal.require(SCOPE_READ).is_ok());
        assert_eq!(
            principal.require(SCOPE_WRITE).unwrap_err().status(),
            http::StatusCode::FORBIDDEN
        );
    }
}
