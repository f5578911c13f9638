//! The edge: a thin HTTP layer in front of dropshot, in the same process, that adds only what
//! dropshot cannot do itself (ARCHITECTURE.md, section 5):
//!
//! - the request id: an incoming `X-Request-Id` is honoured when it is 1-64 characters of
//!   `[A-Za-z0-9._-]`, otherwise one is generated; it is passed to the handlers, echoed in the
//!   response header and filled into error bodies that dropshot's extractors produced;
//! - `Retry-After` on 429 and 503, copied from the envelope's `retry_after_seconds`, and
//!   `WWW-Authenticate` on 401;
//! - the error envelope for dropshot's router errors (unknown path, wrong method);
//! - 413 for a declared body over the limit before it is read, 504 when the server is stuck;
//! - CORS, preflight included.
//!
//! Success bodies (downloads) stream through untouched; only error bodies, which are small
//! JSON, are read and rewritten.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

type EdgeBody = BoxBody<Bytes, hyper::Error>;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Error bodies larger than this are passed through as they are.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct EdgeSettings {
    pub upstream: SocketAddr,
    pub upstream_timeout: Duration,
    pub max_body_bytes: usize,
    pub cors_allowed_origins: Vec<String>,
}

struct EdgeState {
    settings: EdgeSettings,
    client: Client<HttpConnector, Incoming>,
}

pub struct Edge {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Edge {
    pub async fn start(listener: TcpListener, settings: EdgeSettings) -> Result<Self> {
        let local_addr = listener.local_addr()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let state = Arc::new(EdgeState { settings, client });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, state, stopped));
        Ok(Self {
            local_addr,
            stop,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, then waits (up to a grace period) for connections to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<EdgeState>, mut stopped: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = service_fn(move |request| handle(state.clone(), request));
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// An incoming id is kept when it is safe to log and echo.
fn incoming_request_id(headers: &http::HeaderMap) -> Option<String> {
    let id = headers.get(REQUEST_ID)?.to_str().ok()?;
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    valid.then(|| id.to_string())
}

async fn handle(
    state: Arc<EdgeState>,
    mut request: Request<Incoming>,
) -> Result<Response<EdgeBody>, Infallible> {
    let started = Instant::now();
    let request_id =
        incoming_request_id(request.headers()).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let cors_origin = allowed_origin(&state.settings.cors_allowed_origins, request.headers());

    if method == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut response = Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(empty())
            .expect("valid response");
        if cors_origin.is_some() {
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, x-request-id"),
            );
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
        return Ok(finish(response, &request_id, cors_origin));
    }

    // An answer of the edge's own, in the envelope, logged like dropshot's.
    let answer = |status: StatusCode, code: &str, message: &str| {
        let response = envelope(status, code, message, &request_id);
        log_request(&request_id, &method, &path, response.status(), started);
        response
    };

    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > state.settings.max_body_bytes as u64) {
        let limit = state.settings.max_body_bytes;
        let response = answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("The request body is too large: the limit is {limit} bytes."),
        );
        return Ok(finish(response, &request_id, cors_origin));
    }

    // Only origin-form targets (`/path?query`) are forwarded, and the upstream URI is built
    // from parts: an asterisk-form (`*`), absolute-form or authority-form target never
    // leaves the process, so no request can steer the edge to another host or port.
    let origin_form = request.uri().scheme().is_none()
        && request.uri().authority().is_none()
        && request.uri().path().starts_with('/');
    let upstream_uri = request
        .uri()
        .path_and_query()
        .filter(|_| origin_form)
        .and_then(|target| {
            http::Uri::builder()
                .scheme("http")
                .authority(state.settings.upstream.to_string())
                .path_and_query(target.clone())
                .build()
                .ok()
        });
    let Some(upstream_uri) = upstream_uri else {
        let response = answer(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request target must be a path starting with `/`.",
        );
        return Ok(finish(response, &request_id, cors_origin));
    };
    *request.uri_mut() = upstream_uri;
    request.headers_mut().insert(
        REQUEST_ID,
        HeaderValue::from_str(&request_id).expect("a valid id"),
    );

    let response =
        match tokio::time::timeout(state.settings.upstream_timeout, state.client.request(request)).await {
            Ok(Ok(response)) => rewrite_error(response, &request_id, &method, &path, started).await,
            Ok(Err(error)) => {
                tracing::error!(request_id, %error, "the API server did not answer");
                answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "The service is unavailable; retry later.",
                )
            }
            Err(_) => {
                let seconds = state.settings.upstream_timeout.as_secs();
                answer(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    &format!("The request did not complete within {seconds} s."),
                )
            }
        };
    Ok(finish(response, &request_id, cors_origin))
}

/// Error bodies: fill in the request id, convert dropshot's own shape to the envelope, and
/// surface `retry_after_seconds` as `Retry-After`.
async fn rewrite_error(
    response: Response<Incoming>,
    request_id: &str,
    method: &Method,
    path: &str,
    started: Instant,
) -> Response<EdgeBody> {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !response.status().is_client_error() && !response.status().is_server_error() || !is_json {
        return response.map(|body| body.boxed());
    }
    let (mut parts, body) = response.into_parts();
    let Ok(collected) = Limited::new(body, MAX_ERROR_BODY_BYTES).collect().await else {
        return Response::from_parts(parts, full(Bytes::new()));
    };
    let bytes = collected.to_bytes();
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, full(bytes));
    };

    let reached_handler = match value.get_mut("error").and_then(Value::as_object_mut) {
        Some(error) => {
            let has_id = error
                .get("request_id")
                .and_then(Value::as_str)
                .is_some_and(|id| !id.is_empty());
            if !has_id {
                error.insert("request_id".into(), json!(request_id));
            }
            has_id
        }
        None => {
            // dropshot's router: `{"request_id", "error_code", "message"}`.
            let (code, message) = match parts.status {
                StatusCode::NOT_FOUND => ("not_found", format!("No operation at {method} {path}.")),
                StatusCode::METHOD_NOT_ALLOWED => {
                    ("method_not_allowed", format!("{path} does not support {method}."))
                }
                _ => (
                    "invalid_request",
                    value["message"]
                        .as_str()
                        .unwrap_or("Invalid request.")
                        .to_string(),
                ),
            };
            value = envelope_value(code, &message, request_id);
            false
        }
    };
    if parts.status == StatusCode::UNAUTHORIZED {
        parts
            .headers
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(seconds) = value["error"]["retry_after_seconds"].as_u64() {
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if !reached_handler {
        // The handlers log their own requests; these never reached one.
        log_request(request_id, method, path, parts.status, started);
    }
    let body = Bytes::from(serde_json::to_vec(&value).expect("JSON serialises"));
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, full(body))
}

fn allowed_origin(allowed: &[String], headers: &http::HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    allowed
        .iter()
        .any(|a| a == "*" || a == text)
        .then(|| origin.clone())
}

/// Adds the request id and CORS headers to every response. The request's Origin is echoed,
/// never `*`, so the answer stays right if credentials are ever allowed.
fn finish(
    mut response: Response<EdgeBody>,
    request_id: &str,
    cors_origin: Option<HeaderValue>,
) -> Response<EdgeBody> {
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID, HeaderValue::from_str(request_id).expect("a valid id"));
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = cors_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-request-id, retry-after, content-disposition"),
        );
    }
    response
}

fn envelope_value(code: &str, message: &str, request_id: &str) -> Value {
    json!({"error": {"code": code, "message": message, "details": [], "request_id": request_id}})
}

fn envelope(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response<EdgeBody> {
    let body = serde_json::to_vec(&envelope_value(code, message, request_id)).expect("JSON serialises");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(Bytes::from(body)))
        .expect("valid response")
}

fn log_request(request_id: &str, method: &Method, path: &str, status: StatusCode, started: Instant) {
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        request_id,
        operation = Option::<&str>::None,
        user_id = Option::<&str>::None,
        method = %method,
        path,
        status = status.as_u16(),
        duration_ms,
        "request"
    );
}

fn full(bytes: Bytes) -> EdgeBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn empty() -> EdgeBody {
    full(Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: HeaderName, value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(name, value.parse().unwrap());
        headers
    }

    #[test]
    fn honours_only_safe_request_ids() {
        assert_eq!(
            incoming_request_id(&headers(REQUEST_ID, "abc-123_x.y")).as_deref(),
            Some("abc-123_x.y")
        );
        assert_eq!(incoming_request_id(&headers(REQUEST_ID, "has space")), None);
        assert_eq!(incoming_request_id(&headers(REQUEST_ID, &"a".repeat(65))), None);
        assert_eq!(incoming_request_id(&http::HeaderMap::new()), None);
    }

    #[test]
    fn echoes_allowed_origins_only() {
        let origin = headers(header::ORIGIN, "http://localhost:5173");
        assert_eq!(
            allowed_origin(&["*".into()], &origin).unwrap(),
            "http://localhost:5173"
        );
        assert_eq!(
            allowed_origin(&["http://localhost:5173".into()], &origin).unwrap(),
            "http://localhost:5173"
        );
        assert!(allowed_origin(&["https://app.example.com".into()], &origin).is_none());
        assert!(allowed_origin(&["*".into()], &http::HeaderMap::new()).is_none());
    }
}
