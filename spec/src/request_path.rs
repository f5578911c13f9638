//! The one spelling of a request path that the server and the mock route. dropshot's router
//! drops empty segments and percent-decodes each segment before it matches, so `//api/…`,
//! `/api/v1/`, `/%61pi/…` and `/api%2Fv1/…` all reach the route of `/api/v1/…`, while a
//! layer in front of it that reads the raw path (the edge's limit on failed authentications)
//! would see another path. Rather than decode twice, both refuse every other spelling: what
//! they forward or route is then the same path, byte for byte, as the router sees it.

use crate::errors::{ErrorBody, ErrorCode, ErrorDetail};

/// Why `path` (the path of an origin-form target, without its query) is not in the one form
/// that is routed, if it is not: an empty segment (`//`, a trailing `/`), a `.` or `..`
/// segment, or a percent-escape that is malformed or stands for a character that needs none
/// (a letter, digit, `-`, `.`, `_`, `~`) or for `/`. `/` alone is canonical.
pub fn non_canonical(path: &str) -> Option<ErrorBody> {
    let issue = problem(path)?;
    let mut body = ErrorBody::new(
        ErrorCode::InvalidRequest,
        format!(
            "The request path {issue}: send it as the API documents it, without empty, `.` or \
             `..` segments and without percent-encoding letters, digits, `-._~` or `/`."
        ),
    );
    body.details = vec![ErrorDetail::new("path", issue)];
    Some(body)
}

fn problem(path: &str) -> Option<&'static str> {
    if path == "/" {
        return None;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Some("does not start with `/`");
    };
    for segment in rest.split('/') {
        match segment {
            "" => return Some("has an empty segment"),
            "." | ".." => return Some("has a dot-segment"),
            _ => {}
        }
        let bytes = segment.as_bytes();
        let mut at = 0;
        while let Some(offset) = bytes[at..].iter().position(|&byte| byte == b'%') {
            let start = at + offset;
            let decoded = bytes
                .get(start + 1..start + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .filter(|hex| hex.bytes().all(|digit| digit.is_ascii_hexdigit()))
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            match decoded {
                None => return Some("has a malformed percent-escape"),
                Some(byte) if byte == b'/' || is_unreserved(byte) => {
                    return Some("percent-encodes a character that needs no encoding, or `/`")
                }
                Some(_) => at = start + 3,
            }
        }
    }
    None
}

/// RFC 3986's unreserved characters, which a normalised URI never percent-encodes.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_routed_spelling_is_canonical() {
        for canonical in [
            "/",
            "/api/v1/exports/users",
            "/api/v1/exports/users/0b7e9c3a-2f4d-4c1e-9a8b-1c2d3e4f5a6b",
            "/health/live",
            "/files/a%20b",
            "/files/%C3%A9",
        ] {
            assert!(non_canonical(canonical).is_none(), "{canonical}");
        }
        for refused in [
            "//api/v1/exports/users",
            "/api//v1/exports/users",
            "/api/v1/exports/users/",
            "/api/v1/./exports/users",
            "/api/v1/../v1/exports/users",
            "/%61pi/v1/exports/users",
            "/api%2Fv1/exports/users",
            "/api%2fv1/exports/users",
            "/api/v1/exports/users%2E",
            "/api/%7Ev1",
            "/api/v1/%zz",
            "/api/v1/%4",
            "api/v1/exports/users",
            "",
        ] {
            let body = non_canonical(refused).unwrap_or_else(|| panic!("{refused} was taken"));
            assert_eq!(body.code, "invalid_request");
            assert_eq!(body.details[0].field, "path");
        }
    }
}
