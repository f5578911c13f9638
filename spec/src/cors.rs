//! What the API allows a browser on another origin, said and done once for the server's edge
//! and the mock: an app built against the mock must find the same rules on the server. Keys
//! travel in the `Authorization` header, never in cookies, so credentials are never allowed,
//! and an origin allowed as "any" is answered with a literal `*`.
//!
//! A layer answers a request in three steps: [`allowed_origin`] for the request's `Origin`,
//! [`preflight`] when [`is_preflight`] says the request is one, and [`add_headers`] on every
//! answer, the preflight's included.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

/// `Access-Control-Allow-Methods` of a preflight: every method the spec's operations use.
pub const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// `Access-Control-Allow-Headers` of a preflight: the request headers the API reads.
pub const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key, x-request-id";
/// `Access-Control-Expose-Headers`: the response headers a page may read.
pub const EXPOSE_HEADERS: &str = "x-request-id, retry-after, content-disposition, idempotent-replayed";
/// `Access-Control-Max-Age` of a preflight, in seconds.
pub const MAX_AGE: &str = "600";
/// The allowed origin that stands for every origin (the mock's, and the server's `dev`).
pub const ANY: &str = "*";

/// The `Access-Control-Allow-Origin` for a request with these headers: none without an
/// `Origin`; `*` when `allowed` holds [`ANY`]; else the request's `Origin` when it is listed.
/// `*` is sent as `*`, which browsers refuse to combine with credentials: echoing any origin
/// instead would turn into a full bypass the day credentials were allowed.
pub fn allowed_origin<S: AsRef<str>>(allowed: &[S], request_headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = request_headers.get(header::ORIGIN)?;
    if allowed.iter().any(|a| a.as_ref() == ANY) {
        return Some(HeaderValue::from_static(ANY));
    }
    let text = origin.to_str().ok()?;
    allowed.iter().any(|a| a.as_ref() == text).then(|| origin.clone())
}

/// Whether a request is a CORS preflight: `OPTIONS` with `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, request_headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && request_headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight: `204`, with the methods, headers and max age the API allows
/// when `granted` (the edge grants an allowed origin, the mock any path it has operations at),
/// and nothing more otherwise. [`add_headers`] then adds the origin, as to any answer.
pub fn preflight(granted: bool) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    if granted {
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
    }
    response
}

/// The CORS headers of every answer: `Vary: Origin` always (the answer depends on it), and,
/// for an allowed origin (`allowed_origin`'s), `Access-Control-Allow-Origin` and the headers a
/// page may read.
pub fn add_headers(response_headers: &mut HeaderMap, origin: Option<HeaderValue>) {
    response_headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        response_headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        response_headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, value.parse().unwrap());
        headers
    }

    #[test]
    fn echoes_allowed_origins_only() {
        let origin = origin("http://localhost:5173");
        assert_eq!(allowed_origin(&[ANY], &origin).unwrap(), "*");
        assert!(allowed_origin::<String>(&[], &origin).is_none());
        assert_eq!(
            allowed_origin(&["http://localhost:5173".to_string()], &origin).unwrap(),
            "http://localhost:5173"
        );
        assert!(allowed_origin(&["https://app.example.com"], &origin).is_none());
        assert!(allowed_origin(&[ANY], &HeaderMap::new()).is_none());
    }

    #[test]
    fn a_page_may_call_every_operation() {
        let allowed: Vec<&str> = ALLOW_METHODS.split(", ").collect();
        for operation in crate::Spec::bundled().operations() {
            assert!(
                allowed.contains(&operation.method),
                "{} ({} {}) is refused to pages on other origins",
                operation.id,
                operation.method,
                operation.path
            );
        }
    }

    #[test]
    fn a_preflight_is_options_asking_for_a_method() {
        let mut asking = HeaderMap::new();
        asking.insert(header::ACCESS_CONTROL_REQUEST_METHOD, "POST".parse().unwrap());
        assert!(is_preflight(&Method::OPTIONS, &asking));
        assert!(!is_preflight(&Method::OPTIONS, &HeaderMap::new()));
        assert!(!is_preflight(&Method::GET, &asking));
    }

    #[test]
    fn a_granted_preflight_says_what_is_allowed() {
        let granted = preflight(true);
        assert_eq!(granted.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            granted.headers()[header::ACCESS_CONTROL_ALLOW_METHODS],
            ALLOW_METHODS
        );
        assert_eq!(
            granted.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS],
            ALLOW_HEADERS
        );
        assert_eq!(granted.headers()[header::ACCESS_CONTROL_MAX_AGE], MAX_AGE);
        let refused = preflight(false);
        assert_eq!(refused.status(), StatusCode::NO_CONTENT);
        assert!(refused.headers().is_empty());
        assert!(refused.body().is_empty());
    }

    #[test]
    fn every_answer_varies_by_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, "Accept".parse().unwrap());
        add_headers(&mut headers, None);
        let vary: Vec<_> = headers.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept", "Origin"]);
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        add_headers(&mut headers, Some(HeaderValue::from_static(ANY)));
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(headers[header::ACCESS_CONTROL_EXPOSE_HEADERS], EXPOSE_HEADERS);
    }
}
