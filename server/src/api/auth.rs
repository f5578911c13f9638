//! Who is calling: the bearer key of a request, looked up in `db::keys`, and the scopes it
//! grants.

use std::time::Duration;

use uuid::Uuid;

use super::error::ApiError;
use crate::db::keys::{self, secret_hash};

#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
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

/// Keys PostgreSQL did not know, remembered for a while so that a client repeating one costs
/// no query. Safe to remember: keys are random, so an unknown key never becomes valid, and a
/// revoked one stays revoked.
pub struct RejectedKeys {
    remembered: moka::sync::Cache<Vec<u8>, ()>,
}

impl Default for RejectedKeys {
    fn default() -> Self {
        Self {
            remembered: moka::sync::Cache::builder()
                .max_capacity(Self::CAPACITY)
                .time_to_live(Self::REMEMBERED_FOR)
                .build(),
        }
    }
}

impl RejectedKeys {
    const REMEMBERED_FOR: Duration = Duration::from_secs(60);
    /// Bounds the memory a flood of distinct bad keys can take (about 100 bytes each).
    const CAPACITY: u64 = 10_000;

    /// A `401` for a key rejected recently, without asking PostgreSQL.
    pub fn check(&self, token: &str) -> Result<(), ApiError> {
        match self.remembered.contains_key(&secret_hash(token)) {
            true => Err(unknown_key()),
            false => Ok(()),
        }
    }

    pub fn remember(&self, token: &str) {
        self.remembered.insert(secret_hash(token), ());
    }
}

/// The caller of a token `bearer_token` returned: its key unrevoked, unexpired, and its user
/// active.
pub async fn authenticate(client: &deadpool_postgres::Client, token: &str) -> Result<Principal, ApiError> {
    let key = keys::find_active(client, token).await?.ok_or_else(unknown_key)?;
    Ok(Principal {
        user_id: key.user_id,
        scopes: key.scopes,
    })
}

fn unknown_key() -> ApiError {
    ApiError::unauthorized(exports_spec::auth::UNKNOWN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::keys::{SCOPE_READ, SCOPE_WRITE};

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
    fn rejected_keys_are_remembered() {
        let rejected = RejectedKeys::default();
        assert!(rejected.check("exk_unknown").is_ok());
        rejected.remember("exk_unknown");
        assert_eq!(
            rejected.check("exk_unknown").unwrap_err().status(),
            http::StatusCode::UNAUTHORIZED
        );
        assert!(rejected.check("exk_other").is_ok());
        for n in 0..RejectedKeys::CAPACITY + 500 {
            rejected.remember(&format!("exk_{n}"));
        }
        rejected.remembered.run_pending_tasks();
        assert!(rejected.remembered.entry_count() <= RejectedKeys::CAPACITY);
    }

    #[test]
    fn scopes_are_checked() {
        let principal = Principal {
            user_id: Uuid::nil(),
            scopes: vec![SCOPE_READ.into()],
        };
        assert!(principal.require(SCOPE_READ).is_ok());
        assert_eq!(
            principal.require(SCOPE_WRITE).unwrap_err().status(),
            http::StatusCode::FORBIDDEN
        );
    }
}
