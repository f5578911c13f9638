//! Bearer API keys as the contract describes them: how the server and the mock read the
//! `Authorization` header, and the words of a refusal (`401 unauthorized`, `403 forbidden`).

use crate::errors::{ErrorBody, ErrorCode, ErrorDetail};

/// Every token starts with this, so leaked keys are easy to recognise (and scan for).
pub const TOKEN_PREFIX: &str = "exk_";

/// The `WWW-Authenticate` challenge of every `401`.
pub const CHALLENGE: &str = "Bearer";

pub const MESSAGE: &str = "A valid API key is required: send `Authorization: Bearer <key>`.";
pub const MISSING: &str = "is missing";
pub const NOT_TEXT: &str = "is not valid text";
pub const NOT_BEARER: &str = "must be `Bearer <key>`";
pub const NOT_OURS: &str = "is not an API key of this service";
pub const UNKNOWN: &str = "is not a valid API key (unknown, revoked or expired)";

/// The token of an `Authorization: Bearer <token>` header, or the issue with the header.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<&str, &'static str> {
    let value = headers.get(http::header::AUTHORIZATION).ok_or(MISSING)?;
    let value = value.to_str().map_err(|_| NOT_TEXT)?;
    let (scheme, token) = value.split_once(' ').ok_or(NOT_BEARER)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(NOT_BEARER);
    }
    Ok(token)
}

/// A token of this service's form (it may still be unknown).
pub fn ours(token: &str) -> Result<&str, &'static str> {
    if token.starts_with(TOKEN_PREFIX) {
        Ok(token)
    } else {
        Err(NOT_OURS)
    }
}

/// The `401` envelope: the `Authorization` header and what is wrong with it.
pub fn unauthorized(issue: &str) -> ErrorBody {
    let mut body = ErrorBody::new(ErrorCode::Unauthorized, MESSAGE);
    body.details = vec![ErrorDetail::new("Authorization", issue)];
    body
}

/// The `403` envelope for a key without the operation's scope.
pub fn forbidden(scope: &str) -> ErrorBody {
    let mut body = ErrorBody::new(
        ErrorCode::Forbidden,
        format!("This API key lacks the {scope} scope."),
    );
    body.details = vec![ErrorDetail::new(
        "scope",
        format!("this API key lacks the {scope} scope"),
    )];
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(value: Option<&'static str>) -> Result<&'static str, &'static str> {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = value {
            headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static(value));
        }
        bearer_token(&headers).map(|token| if token == "exk_a" { "exk_a" } else { "other" })
    }

    #[test]
    fn reads_the_bearer_token_or_names_the_issue() {
        assert_eq!(read(None), Err(MISSING));
        assert_eq!(read(Some("Basic abc")), Err(NOT_BEARER));
        assert_eq!(read(Some("Bearer")), Err(NOT_BEARER));
        assert_eq!(read(Some("Bearer   ")), Err(NOT_BEARER));
        assert_eq!(read(Some("bearer exk_a ")), Ok("exk_a"));
        assert_eq!(ours("garbage"), Err(NOT_OURS));
    }
}
