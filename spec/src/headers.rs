//! The headers every answer of the API carries, whoever writes it: the server's edge (in front
//! of every handler) and the listener (when it refuses a head hyper cannot read). Answers
//! carry user data or signed links, so nothing may be cached unless the answer says so, and
//! no browser may sniff a type other than the one sent.

use http::header::{self, HeaderMap, HeaderValue};

/// Adds `X-Request-Id`, `X-Content-Type-Options: nosniff`, and `Cache-Control: no-store`
/// unless the answer has a `Cache-Control` of its own. CORS is `cors::add_headers`.
pub fn add_common(response_headers: &mut HeaderMap, request_id: &str) {
    crate::request_id::insert(response_headers, request_id);
    response_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response_headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_keeps_its_own_cache_control() {
        let mut headers = HeaderMap::new();
        add_common(&mut headers, "r-1");
        assert_eq!(headers["x-request-id"], "r-1");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");

        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        add_common(&mut headers, "r-2");
        assert_eq!(headers[header::CACHE_CONTROL], "max-age=60");
    }
}
