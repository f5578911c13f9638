//! `X-Request-Id`, as the server's edge and the mock both handle it: an incoming id of 1 to
//! 64 characters from `[A-Za-z0-9._-]` (safe to log and echo) is kept, any other is replaced
//! by a fresh one.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header, both ways: the caller's id coming in, the request's id going out.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the incoming `X-Request-Id` when it is one to keep, else a new UUID.
pub fn of(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_kept(id))
        .map_or_else(|| crate::random_uuid().to_string(), str::to_string)
}

/// Sends `id` (one of `of`'s: a kept id or a UUID, both valid header text) as `X-Request-Id`.
pub fn insert(response_headers: &mut HeaderMap, id: &str) {
    let value = HeaderValue::from_str(id).expect("a request id is valid header text");
    response_headers.insert(HEADER, value);
}

fn is_kept(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_ids_are_kept() {
        for kept in ["trace-42.a_b", "a", &"x".repeat(64)] {
            assert!(is_kept(kept), "{kept}");
        }
        for replaced in ["", "<script>", "a b", &"x".repeat(65), "é"] {
            assert!(!is_kept(replaced), "{replaced}");
        }
    }
}
