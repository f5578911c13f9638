//! `X-Request-Id`, as the server's edge and the mock both handle it: an incoming id of 1 to
//! 64 characters from `[A-Za-z0-9._-]` (safe to log and echo) is kept, any other is replaced
//! by a fresh one.

/// The request's id: the incoming `X-Request-Id` when it is one to keep, else a new UUID.
pub fn of(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_kept(id))
        .map_or_else(|| crate::random_uuid().to_string(), str::to_string)
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
