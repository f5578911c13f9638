//! The edge: a thin HTTP layer in front of dropshot, in the same process, that adds only what
//! dropshot cannot do itself (docs/architecture.md, "The edge", says what and why). What the
//! mock must do alike comes from the spec crate (`cors`, `errors::envelope`, `limits`,
//! `request_id`, `headers`, `request_path`):
//!
//! - the request id: an incoming `X-Request-Id` is honoured when it is 1-64 characters of
//!   `[A-Za-z0-9._-]`, otherwise one is generated; it is passed to the handlers, echoed in the
//!   response header and filled into error bodies that dropshot's extractors produced;
//! - `Retry-After` on 429 and 503, copied from the envelope's `retry_after_seconds`, and
//!   `WWW-Authenticate` on 401;
//! - the error envelope for dropshot's router errors (unknown path, wrong method);
//! - 413 for a declared body over the limit before it is read, 504 when the server is stuck;
//! - CORS, preflight included;
//! - a limit on failed authentications per client address (`429` before PostgreSQL is asked);
//! - through `exports_listener`, the timeouts and the cap on connections that keep slow
//!   clients from holding the server.
//!
//! Success bodies (downloads) stream through untouched; only error bodies, which are small
//! JSON, are read and rewritten.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use exports_listener::{Limits, Serving};
use exports_spec::errors::{self, ErrorBody, ErrorCode};
use exports_spec::{cors, limits, request_id};
use futures::StreamExt;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::net::TcpListener;

type EdgeBody = BoxBody<Bytes, hyper::Error>;

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
    /// Timeouts and the cap on client connections.
    pub limits: Limits,
    /// See `ApiSettings::max_failed_authentications_per_minute`.
    pub max_failed_authentications_per_minute: u32,
}

struct EdgeState {
    settings: EdgeSettings,
    client: Client<HttpConnector, Incoming>,
    failed_authentications: FailedAuthentications,
}

/// Failed authentications (`401` answers) per client address, in fixed one-minute windows. An
/// address past the limit gets `429` for its API requests until its window ends, from the
/// edge: they reach neither the handlers nor PostgreSQL. A window is a cache entry that lives
/// `WINDOW` from its first failure.
struct FailedAuthentications {
    limit: u32,
    windows: moka::sync::Cache<IpAddr, Arc<FailureWindow>>,
}

struct FailureWindow {
    started: Instant,
    failures: AtomicU32,
}

impl FailedAuthentications {
    const WINDOW: Duration = Duration::from_secs(60);
    /// Bounds the memory a flood from many addresses can take.
    const MAX_ADDRESSES: u64 = 100_000;

    fn new(limit: u32) -> Self {
        Self {
            limit,
            windows: moka::sync::Cache::builder()
                .max_capacity(Self::MAX_ADDRESSES)
                .time_to_live(Self::WINDOW)
                .build(),
        }
    }

    /// One IPv6 client usually holds a whole /64, so that is what counts as one address.
    fn address(peer: IpAddr) -> IpAddr {
        match peer {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())
            }
            IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked above")),
            v4 => v4,
        }
    }

    /// Seconds until `peer` may try again, when it is past the limit.
    fn retry_after(&self, peer: IpAddr) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        let window = self.windows.get(&Self::address(peer))?;
        let left = Self::WINDOW.checked_sub(window.started.elapsed())?;
        (window.failures.load(Ordering::Relaxed) >= self.limit)
            .then(|| left.as_secs_f64().ceil().max(1.0) as u64)
    }

    fn record(&self, peer: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let window = self.windows.get_with(Self::address(peer), || {
            Arc::new(FailureWindow {
                started: Instant::now(),
                failures: AtomicU32::new(0),
            })
        });
        window.failures.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Edge {
    serving: Serving,
}

impl Edge {
    pub fn start(listener: TcpListener, settings: EdgeSettings) -> Result<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let limits = settings.limits;
        let failed_authentications =
            FailedAuthentications::new(settings.max_failed_authentications_per_minute);
        let state = Arc::new(EdgeState {
            settings,
            client,
            failed_authentications,
        });
        let serving = exports_listener::serve(listener, limits, move |request, peer| {
            handle(state.clone(), request, peer.ip())
        })?;
        Ok(Self { serving })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.serving.local_addr()
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.serving.open_connections()
    }

    /// Stops accepting, then waits (up to a grace period) for connections to finish.
    pub async fn shutdown(self) {
        self.serving.shutdown(SHUTDOWN_GRACE).await;
    }
}

async fn handle(state: Arc<EdgeState>, mut request: Request<Incoming>, peer: IpAddr) -> Response<EdgeBody> {
    let started = Instant::now();
    let request_id = exports_spec::request_id::of(request.headers());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let cors_origin = cors::allowed_origin(&state.settings.cors_allowed_origins, request.headers());

    if cors::is_preflight(&method, request.headers()) {
        let response = cors::preflight(cors_origin.is_some()).map(full);
        return with_headers(response, &request_id, cors_origin);
    }

    // An answer of the edge's own, in the envelope, logged like dropshot's.
    let answer = |status: StatusCode, body: ErrorBody| {
        let response = envelope(status, body, &request_id);
        log_request(&request_id, &method, &path, response.status(), started);
        response
    };

    if let Some((status, body)) = limits::oversized_head(&request) {
        let response = answer(status, body);
        return with_headers(response, &request_id, cors_origin);
    }

    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > state.settings.max_body_bytes as u64) {
        let limit = state.settings.max_body_bytes;
        let response = answer(StatusCode::PAYLOAD_TOO_LARGE, errors::payload_too_large(limit));
        return with_headers(response, &request_id, cors_origin);
    }

    // From here on, the path is the one dropshot routes (`exports_spec::request_path`).
    if let Some(body) = exports_spec::request_path::non_canonical(&path) {
        let response = answer(StatusCode::BAD_REQUEST, body);
        return with_headers(response, &request_id, cors_origin);
    }

    if path.starts_with("/api/") {
        if let Some(seconds) = state.failed_authentications.retry_after(peer) {
            let body = errors::too_many_failed_authentications(seconds);
            let response = answer(StatusCode::TOO_MANY_REQUESTS, body);
            return with_headers(response, &request_id, cors_origin);
        }
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
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                "The request target must be a path starting with `/`.",
            ),
        );
        return with_headers(response, &request_id, cors_origin);
    };
    *request.uri_mut() = upstream_uri;
    request_id::insert(request.headers_mut(), &request_id);

    let response =
        match tokio::time::timeout(state.settings.upstream_timeout, state.client.request(request)).await {
            Ok(Ok(response)) => {
                if response.status() == StatusCode::UNAUTHORIZED {
                    state.failed_authentications.record(peer);
                }
                rewrite_error(response, &request_id, &method, &path, started).await
            }
            Ok(Err(error)) => {
                tracing::error!(request_id, %error, "the API server did not answer");
                answer(StatusCode::SERVICE_UNAVAILABLE, unavailable())
            }
            Err(_) => {
                let seconds = state.settings.upstream_timeout.as_secs();
                answer(StatusCode::GATEWAY_TIMEOUT, errors::timeout(seconds))
            }
        };
    with_headers(response, &request_id, cors_origin)
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
    let bytes = match read_error_body(body).await {
        ErrorBodyRead::Whole(bytes) => bytes,
        ErrorBodyRead::TooLong(body) => return Response::from_parts(parts, body),
        ErrorBodyRead::Broken(error) => {
            tracing::error!(request_id, %error, "the API server's error body broke off");
            return envelope(StatusCode::SERVICE_UNAVAILABLE, unavailable(), request_id);
        }
    };
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
            let mut body = match parts.status {
                StatusCode::NOT_FOUND => errors::no_route(path),
                StatusCode::METHOD_NOT_ALLOWED => errors::method_not_allowed(path, method.as_str()),
                _ => ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    value["message"].as_str().unwrap_or("Invalid request."),
                ),
            };
            body.request_id = request_id.to_string();
            value = json!({ "error": body });
            false
        }
    };
    let retry_after = value["error"]["retry_after_seconds"].as_u64();
    errors::add_envelope_headers(&mut parts.headers, parts.status, retry_after);
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

enum ErrorBodyRead<E> {
    Whole(Bytes),
    /// Longer than `MAX_ERROR_BODY_BYTES`: what was read, then the rest, as it was sent.
    TooLong(BoxBody<Bytes, E>),
    Broken(E),
}

/// Reads an error body to rewrite it, unless it is too long to hold: then it is passed on
/// whole, the part already read in front of the rest, with the upstream's own headers.
async fn read_error_body<B>(mut body: B) -> ErrorBodyRead<B::Error>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
{
    let mut read: Vec<Bytes> = Vec::new();
    let mut length = 0;
    while let Some(frame) = body.frame().await {
        let data = match frame.map(Frame::into_data) {
            Ok(Ok(data)) => data,
            // Trailers: an error body has none worth keeping.
            Ok(Err(_)) => continue,
            Err(error) => return ErrorBodyRead::Broken(error),
        };
        length += data.len();
        read.push(data);
        if length > MAX_ERROR_BODY_BYTES {
            let head = futures::stream::iter(read.into_iter().map(|data| Ok(Frame::data(data))));
            let whole = StreamBody::new(head.chain(BodyStream::new(body)));
            return ErrorBodyRead::TooLong(BodyExt::boxed(whole));
        }
    }
    ErrorBodyRead::Whole(read.concat().into())
}

/// Adds the request id, the headers every answer carries and CORS to every response.
fn with_headers(
    mut response: Response<EdgeBody>,
    request_id: &str,
    cors_origin: Option<HeaderValue>,
) -> Response<EdgeBody> {
    let headers = response.headers_mut();
    exports_spec::headers::add_common(headers, request_id);
    cors::add_headers(headers, cors_origin);
    response
}

/// An answer of the edge's own, in the envelope.
fn envelope(status: StatusCode, body: ErrorBody, request_id: &str) -> Response<EdgeBody> {
    errors::envelope(status, body, request_id).map(full)
}

/// `503 service_unavailable`: the API server behind the edge did not answer whole.
fn unavailable() -> ErrorBody {
    let mut body = ErrorBody::new(
        ErrorCode::ServiceUnavailable,
        "The service is unavailable; retry later.",
    );
    body.retry_after_seconds = Some(super::error::DEPENDENCY_RETRY_AFTER_SECONDS);
    body
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_body_too_long_to_rewrite_is_passed_on_whole() {
        let chunks = |sizes: &[usize]| {
            let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &size)| Ok(Frame::data(Bytes::from(vec![b'a' + i as u8; size]))))
                .collect();
            StreamBody::new(futures::stream::iter(frames))
        };
        let sizes = [40 * 1024, 30 * 1024, 20 * 1024];
        let ErrorBodyRead::TooLong(body) = read_error_body(chunks(&sizes)).await else {
            panic!("a 90 KiB body was read whole");
        };
        let passed_on = body.collect().await.unwrap().to_bytes();
        let sent: Vec<u8> = sizes
            .iter()
            .enumerate()
            .flat_map(|(i, &size)| vec![b'a' + i as u8; size])
            .collect();
        assert_eq!(passed_on.as_ref(), sent.as_slice());

        let ErrorBodyRead::Whole(small) = read_error_body(chunks(&[10, MAX_ERROR_BODY_BYTES - 10])).await
        else {
            panic!("a 64 KiB body was not read whole");
        };
        assert_eq!(small.len(), MAX_ERROR_BODY_BYTES);
    }
}
