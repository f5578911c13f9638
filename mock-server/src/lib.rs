//! A mock of the API driven only by `spec/openapi.yaml`: it routes every operation the spec
//! has, validates requests against it, and answers with the spec's examples. Prism's request
//! selectors work the same: `Prefer: code=429`, `Prefer: example=name`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use exports_spec::errors::{self, ErrorBody, ErrorCode, ErrorDetail};
use exports_spec::{auth, cors, request, Operation, ResponseBody, Spec};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

mod dynamic;
mod outcome;
mod sandbox;
mod stateful;
mod webhooks;

use outcome::Outcome;

pub use stateful::{Clock, ManualClock, ShiftedClock};

/// How the mock behaves beyond the spec itself.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Remember created exports and play their lifecycle (off: every answer is an example).
    pub stateful: bool,
    /// How much faster than their `estimated_seconds` exports finish.
    pub speed: f64,
    /// Added to every response (a request can ask for its own with `Prefer: latency=<ms>`).
    pub latency: Duration,
    /// Reload the spec when this file changes; a broken edit keeps the last good spec.
    pub watch: Option<std::path::PathBuf>,
    /// Seed of `Prefer: dynamic=true` data: the same seed gives the same answers.
    pub seed: u64,
    /// The time remembered exports read (a test moves a manual clock instead of sleeping).
    pub clock: Clock,
    /// The API keys the mock accepts, with their scopes: an unknown key gets `401`, a key
    /// without an operation's `x-required-scope` `403`. None: any non-empty key, with every
    /// scope.
    pub keys: Option<BTreeMap<String, Vec<String>>>,
    /// When failed webhook deliveries are tried again (the server's defaults unless a test
    /// wants them sooner).
    pub webhook_retries: exports_spec::webhooks::Retries,
    /// Serve the test sandbox's control surface under `/__mock/` (`sandbox`).
    pub sandbox: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            stateful: true,
            speed: 1.0,
            latency: Duration::ZERO,
            watch: None,
            seed: 0,
            clock: Clock::System,
            keys: None,
            webhook_retries: exports_spec::webhooks::Retries {
                first_backoff: Duration::from_secs(5),
                max_backoff: Duration::from_secs(3600),
                retry_for: exports_spec::webhooks::RETRY_FOR,
            },
            sandbox: false,
        }
    }
}

struct Mock {
    /// The current spec; replaced whole when the watched file changes and parses.
    spec: std::sync::RwLock<Arc<Spec>>,
    options: MockOptions,
    exports: stateful::Exports,
    webhooks: Arc<webhooks::Webhooks>,
    /// With `MockOptions::sandbox`.
    sandbox: Option<sandbox::Sandbox>,
}

/// Request bodies larger than this are refused before validation, as the server's default.
const MAX_BODY_BYTES: usize = errors::DEFAULT_MAX_BODY_BYTES;

pub struct RunningMock {
    pub local_addr: SocketAddr,
    /// Stops the spec watcher.
    stop: watch::Sender<bool>,
    serving: exports_listener::Serving,
    spec_edits: watch::Receiver<SpecEdits>,
}

/// The edits of the watched spec file the mock has handled so far: each one it noticed was
/// either loaded or rejected (and the last good spec kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecEdits {
    pub loaded: u64,
    pub rejected: u64,
}

impl RunningMock {
    pub async fn start(spec: Spec, listen: SocketAddr, options: MockOptions) -> Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let local_addr = listener.local_addr()?;
        let (stop, _) = watch::channel(false);
        let webhooks = Arc::new(webhooks::Webhooks::new(options.webhook_retries, stop.subscribe()));
        // The sandbox moves the clock: the machine's, shifted.
        let clock = match (&options.clock, options.sandbox) {
            (Clock::System, true) => Clock::Shifted(ShiftedClock::default()),
            (clock, _) => clock.clone(),
        };
        let exports = stateful::Exports::new(options.speed, clock, webhooks.clone());
        let spec = Arc::new(Mock {
            spec: std::sync::RwLock::new(Arc::new(spec)),
            sandbox: options.sandbox.then(sandbox::Sandbox::default),
            options,
            exports,
            webhooks,
        });
        if spec.options.stateful {
            let mock = spec.clone();
            let stopped = stop.subscribe();
            tokio::spawn(async move { mock.exports.announce_finished(stopped).await });
        }
        let (edits, spec_edits) = watch::channel(SpecEdits::default());
        if let Some(path) = spec.options.watch.clone() {
            // Read here, not in the task, so that any edit made once `start` returns is seen.
            let served = std::fs::read_to_string(&path).ok();
            tokio::spawn(watch_spec(spec.clone(), path, served, edits, stop.subscribe()));
        }
        let serving = exports_listener::serve(
            listener,
            exports_listener::Limits::default(),
            move |request, _peer| {
                let spec = spec.clone();
                async move { handle(&spec, request).await }
            },
        )?;
        Ok(Self {
            local_addr,
            stop,
            serving,
            spec_edits,
        })
    }

    /// Follows the edits of the watched spec, for a caller that must know an edit was handled
    /// rather than wait a while (its sender is gone when the spec is not watched).
    pub fn spec_edits(&self) -> watch::Receiver<SpecEdits> {
        self.spec_edits.clone()
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.serving.shutdown(SHUTDOWN_GRACE).await;
    }
}

/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often the watched spec file is looked at.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Polls the spec file (no platform watcher to set up) and swaps in each version that parses;
/// a broken one is logged and the last good spec keeps serving. It compares the content, not
/// the modification time, so two edits within one tick of the file system's clock are both seen.
async fn watch_spec(
    mock: Arc<Mock>,
    path: std::path::PathBuf,
    mut seen: Option<String>,
    edits: watch::Sender<SpecEdits>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = stopped.changed() => return,
        }
        let read = std::fs::read_to_string(&path);
        if read.as_ref().ok() == seen.as_ref() {
            continue;
        }
        seen = read.as_ref().ok().cloned();
        match read
            .map_err(anyhow::Error::from)
            .and_then(|text| Spec::parse(&text))
        {
            Ok(spec) => {
                *mock.spec.write().expect("spec lock") = Arc::new(spec);
                edits.send_modify(|edits| edits.loaded += 1);
                tracing::info!(spec = %path.display(), "spec reloaded");
            }
            Err(error) => {
                edits.send_modify(|edits| edits.rejected += 1);
                tracing::warn!(spec = %path.display(), error = format!("{error:#}"), "spec not reloaded: keeping the last good one");
            }
        }
    }
}

/// What a request asked for with `Prefer`.
#[derive(Debug, Default, PartialEq)]
struct Preferences {
    code: Option<u16>,
    example: Option<String>,
    latency: Option<Duration>,
    dynamic: bool,
}

fn preferences(headers: &http::HeaderMap) -> Preferences {
    let mut preferences = Preferences::default();
    for value in headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()) {
        for item in value.split([',', ';']) {
            match item.trim().split_once('=') {
                Some(("code", code)) => preferences.code = code.trim().parse().ok(),
                Some(("example", name)) => {
                    preferences.example = Some(name.trim().trim_matches('"').to_string())
                }
                Some(("dynamic", flag)) => preferences.dynamic = flag.trim() == "true",
                Some(("latency", ms)) => {
                    preferences.latency = ms.trim().parse().ok().map(Duration::from_millis)
                }
                _ => {}
            }
        }
    }
    preferences
}

async fn handle(mock: &Mock, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let spec = mock.spec.read().expect("spec lock").clone();
    let spec = spec.as_ref();
    let request_id = exports_spec::request_id::of(request.headers());
    let preferences = preferences(request.headers());
    let latency = preferences.latency.unwrap_or(mock.options.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    // Any origin, as the server's `dev` allows it: a literal `*`, never credentials (keys
    // travel in `Authorization`), so an app that works here works there.
    let origin = cors::allowed_origin(&[cors::ANY], request.headers());
    let (parts, body) = request.into_parts();
    let mut response = if cors::is_preflight(&parts.method, &parts.headers) {
        preflight(spec, &parts)
    } else {
        match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(body) => respond(mock, spec, &parts, &preferences, &body.to_bytes(), &request_id).await,
            Err(_) => envelope(
                StatusCode::PAYLOAD_TOO_LARGE,
                errors::payload_too_large(MAX_BODY_BYTES),
                &request_id,
            ),
        }
    };
    let headers = response.headers_mut();
    exports_spec::request_id::insert(headers, &request_id);
    cors::add_headers(headers, origin);
    tracing::info!(
        request_id,
        method = parts.method.as_str(),
        path = parts.uri.path(),
        status = response.status().as_u16(),
        "request"
    );
    response
}

/// Operations whose path template matches, with the path parameters of the match.
fn routes<'s>(spec: &'s Spec, path: &str) -> Vec<(Operation<'s>, BTreeMap<String, String>)> {
    spec.operations_at(path)
        .into_iter()
        .map(|(operation, parameters)| {
            let decoded = parameters
                .into_iter()
                .map(|(name, value)| (name, percent_decode(value)))
                .collect();
            (operation, decoded)
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    if !text.contains(['%', '+']) {
        return text.to_string();
    }
    form_urlencoded::parse(format!("v={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A preflight is granted on any path that has operations (every origin is allowed).
fn preflight(spec: &Spec, parts: &http::request::Parts) -> Response<Full<Bytes>> {
    let has_operations = !routes(spec, parts.uri.path()).is_empty();
    cors::preflight(has_operations).map(Full::new)
}

async fn respond(
    mock: &Mock,
    spec: &Spec,
    parts: &http::request::Parts,
    preferences: &Preferences,
    body: &[u8],
    request_id: &str,
) -> Response<Full<Bytes>> {
    let path = parts.uri.path();
    // The server's edge refuses these too, before any route is looked up.
    if let Some(refusal) = exports_spec::request_path::non_canonical(path) {
        return envelope(StatusCode::BAD_REQUEST, refusal, request_id);
    }
    if let Some(sandbox) = mock
        .sandbox
        .as_ref()
        .filter(|_| path.starts_with(sandbox::PREFIX))
    {
        return match sandbox.control(spec, &parts.method, path, body, request_id) {
            sandbox::Control::Answer(response) => response,
            sandbox::Control::Advance(by) => {
                let clock = mock.exports.clock();
                clock.advance(by);
                tracing::info!(seconds = by.as_secs(), "sandbox: clock moved forward");
                let now = clock
                    .now_utc()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(
                        serde_json::json!({"now": now}).to_string(),
                    )))
                    .expect("valid response")
            }
            sandbox::Control::FailExports { count, message } => {
                mock.exports.fail_next(count, &message);
                no_content()
            }
            sandbox::Control::FailDeliveries { endpoint_id, count } => {
                match mock.webhooks.fail_next(endpoint_id, count) {
                    true => no_content(),
                    false => envelope(StatusCode::BAD_REQUEST, sandbox::unknown_endpoint(), request_id),
                }
            }
            sandbox::Control::Reset => {
                mock.exports.reset();
                mock.webhooks.reset();
                sandbox.clear();
                tracing::info!("sandbox: reset");
                no_content()
            }
        };
    }
    let matches = routes(spec, path);
    // The contract itself, as the server serves it (not the spec's examples of it).
    if let Some((media_type, body)) = spec.served(path).filter(|_| parts.method == Method::GET) {
        return Response::builder()
            .header(header::CONTENT_TYPE, media_type)
            .body(Full::new(Bytes::from(body)))
            .expect("valid response");
    }
    if matches.is_empty() {
        return envelope(StatusCode::NOT_FOUND, errors::no_route(path), request_id);
    }
    let Some((operation, path_parameters)) = matches
        .iter()
        .find(|(op, _)| op.method.eq_ignore_ascii_case(parts.method.as_str()))
    else {
        let allowed: Vec<&str> = matches.iter().map(|(op, _)| op.method).collect();
        let mut response = envelope(
            StatusCode::METHOD_NOT_ALLOWED,
            errors::method_not_allowed(path, parts.method.as_str()),
            request_id,
        );
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_str(&allowed.join(", ")).expect("methods"),
        );
        return response;
    };

    let request = Parsed::new(parts, path_parameters, body);
    let accept = request.accept;
    if let Some((status, refusal)) = refuse_key(spec, operation, &parts.headers, mock.options.keys.as_ref()) {
        return envelope(status, refusal, request_id);
    }
    // A fault the sandbox queued answers in place of the operation, as the spec documents it.
    if let Some(status) = mock
        .sandbox
        .as_ref()
        .and_then(|sandbox| sandbox.take_fault(operation.id))
    {
        let fault = Preferences {
            code: Some(status),
            ..Preferences::default()
        };
        return answer(spec, operation, &fault, accept, mock.options.seed, request_id);
    }
    let problems = validate_request(spec, operation, &request);
    if !problems.is_empty() {
        let mut body = ErrorBody::new(
            ErrorCode::InvalidRequest,
            errors::invalid_request_message(&problems),
        );
        body.details = problems;
        return envelope(StatusCode::BAD_REQUEST, body, request_id);
    }
    let canned = preferences.code.is_some() || preferences.example.is_some() || preferences.dynamic;
    if mock.options.stateful && !canned {
        if let Some(response) = play(mock, spec, operation, &request, request_id).await {
            return response;
        }
    }
    answer(
        spec,
        operation,
        preferences,
        accept,
        mock.options.seed,
        request_id,
    )
}

/// The stateful flow's answer, if the operation is one of the exports flow's or the webhooks'.
async fn play(
    mock: &Mock,
    spec: &Spec,
    operation: &Operation<'_>,
    request: &Parsed<'_>,
    request_id: &str,
) -> Option<Response<Full<Bytes>>> {
    if !stateful::Exports::answers(operation.id) && !webhooks::Webhooks::answers(operation.id) {
        return None;
    }
    let (parts, accept) = (request.parts, request.accept);
    let owner = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let example_estimate = first_example(spec, operation).and_then(|e| e.get("estimated_seconds")?.as_u64());
    let base_url = format!("http://{host}");
    let body = request.json.as_ref().and_then(|json| json.as_ref().ok());
    let exports = mock.exports.handle(&stateful::Call {
        operation_id: operation.id,
        owner,
        export_id: request.path_parameters.get("export_id").map(String::as_str),
        query: &request.query,
        body,
        base_url: &base_url,
        example_estimate,
        idempotency_key: parts.headers.get("idempotency-key").and_then(|v| v.to_str().ok()),
    });
    let outcome = match exports {
        Some(outcome) => outcome,
        None => {
            mock.webhooks
                .handle(&webhooks::Call {
                    operation_id: operation.id,
                    owner,
                    endpoint_id: request.path_parameters.get("endpoint_id").map(String::as_str),
                    body,
                })
                .await?
        }
    };
    let example = |code, name: Option<&str>| {
        answer(
            spec,
            operation,
            &Preferences {
                code: Some(code),
                example: name.map(str::to_string),
                ..Default::default()
            },
            accept,
            mock.options.seed,
            request_id,
        )
    };
    let canned = |code| example(code, None);
    // A JSON answer, checked against the spec first (its example is served otherwise).
    let json = |status: u16, value: &Value| {
        let headers = BTreeMap::from([
            ("content-type".to_string(), "application/json".to_string()),
            ("x-request-id".to_string(), request_id.to_string()),
        ]);
        let body = ResponseBody::Json(value);
        if let Err(problems) =
            spec.validate_operation_response(operation, parts.uri.path(), status, &headers, body)
        {
            tracing::warn!(
                operation = operation.id,
                ?problems,
                "the stateful answer breaks the spec; serving its example"
            );
            return canned(status);
        }
        let bytes = serde_json::to_vec(value).expect("JSON serialises");
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .expect("valid response")
    };
    Some(match outcome {
        Outcome::Canned(code) => canned(code),
        Outcome::NoContent => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .expect("valid response"),
        Outcome::Error(status, body) => {
            envelope(StatusCode::from_u16(status).expect("a status"), body, request_id)
        }
        Outcome::Example(code, name) => example(code, Some(name)),
        Outcome::Replayed(value) => {
            let mut response = json(202, &value);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
        Outcome::Json(status, value) => json(status, &value),
        Outcome::File {
            media_type,
            disposition,
            bytes,
        } => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, media_type)
            .header(header::CONTENT_DISPOSITION, disposition)
            .body(Full::new(Bytes::from(bytes)))
            .expect("valid response"),
    })
}

/// The first example of an operation's first success response.
fn first_example<'s>(spec: &'s Spec, operation: &Operation<'s>) -> Option<&'s Value> {
    let responses = operation.definition.get("responses")?.as_object()?;
    let (_, response) = responses
        .iter()
        .filter(|(s, _)| s.starts_with('2'))
        .min_by_key(|(s, _)| s.as_str())?;
    let media = spec
        .resolve(response)
        .ok()?
        .get("content")?
        .get("application/json")?;
    media.get("example").or_else(|| {
        let first = media.get("examples")?.as_object()?.values().next()?;
        spec.resolve(first).ok()?.get("value")
    })
}

/// The spec's security for the operation (its own, else the document's) asks for a bearer key.
fn needs_bearer(spec: &Spec, operation: &Operation) -> bool {
    let security = operation
        .definition
        .get("security")
        .or_else(|| spec.document().get("security"));
    security.and_then(Value::as_array).is_some_and(|requirements| {
        !requirements.is_empty()
            && requirements
                .iter()
                .all(|r| r.as_object().is_some_and(|r| !r.is_empty()))
    })
}

/// The refusal of a request whose key the operation does not take, as the server words it
/// (`exports_spec::auth`): `401` for a missing or malformed `Authorization` header (and, when
/// `keys` are given, for a key not among them), `403` for a known key without the operation's
/// `x-required-scope`.
fn refuse_key(
    spec: &Spec,
    operation: &Operation,
    headers: &http::HeaderMap,
    keys: Option<&BTreeMap<String, Vec<String>>>,
) -> Option<(StatusCode, ErrorBody)> {
    if !needs_bearer(spec, operation) {
        return None;
    }
    let unauthorized = |issue| Some((StatusCode::UNAUTHORIZED, auth::unauthorized(issue)));
    let token = match auth::bearer_token(headers) {
        Ok(token) => token,
        Err(issue) => return unauthorized(issue),
    };
    let keys = keys?;
    let scopes = match auth::ours(token).map(|token| keys.get(token)) {
        Ok(Some(scopes)) => scopes,
        Ok(None) => return unauthorized(auth::UNKNOWN),
        Err(issue) => return unauthorized(issue),
    };
    let required = operation
        .definition
        .get("x-required-scope")
        .and_then(Value::as_str)?;
    (!scopes.iter().any(|scope| scope == required))
        .then(|| (StatusCode::FORBIDDEN, auth::forbidden(required)))
}

/// What the handlers read of a request, parsed once.
struct Parsed<'r> {
    parts: &'r http::request::Parts,
    path_parameters: &'r BTreeMap<String, String>,
    query: HashMap<String, String>,
    body: &'r [u8],
    /// The body as JSON, when there is one (the issue when it is not JSON).
    json: Option<Result<Value, String>>,
    accept: Option<&'r str>,
}

impl<'r> Parsed<'r> {
    fn new(
        parts: &'r http::request::Parts,
        path_parameters: &'r BTreeMap<String, String>,
        body: &'r [u8],
    ) -> Self {
        Self {
            parts,
            path_parameters,
            query: parts
                .uri
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
            body,
            json: (!body.is_empty()).then(|| errors::parse_json(body)),
            accept: parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
        }
    }
}

/// Every problem with the request, as the spec's operation describes it (and the server checks).
fn validate_request(spec: &Spec, operation: &Operation, request: &Parsed) -> Vec<ErrorDetail> {
    let sent = request::Sent {
        path_parameters: request.path_parameters,
        query: request.parts.uri.query(),
        headers: &request.parts.headers,
        body: request::Body::Raw {
            bytes: request.body,
            json: request.json.as_ref(),
        },
    };
    spec.request_problems(operation, &sent)
}

/// The operation's documented response for the preferred status (else its first success),
/// with the preferred example (else the first one).
fn answer(
    spec: &Spec,
    operation: &Operation,
    preferences: &Preferences,
    accept: Option<&str>,
    seed: u64,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let (code, example_name) = (preferences.code, preferences.example.as_deref());
    let responses = operation.definition.get("responses").and_then(Value::as_object);
    let statuses = || responses.into_iter().flat_map(|r| r.keys());
    let status: &str = match code {
        Some(code) => match statuses().find(|s| s.parse() == Ok(code)) {
            Some(status) => status,
            None => {
                let documented: Vec<&String> = statuses().collect();
                return mock_error(
                    &format!(
                        "{} documents no {code} response (it has {documented:?})",
                        operation.id
                    ),
                    request_id,
                );
            }
        },
        None => match statuses()
            .filter(|s| s.starts_with('2'))
            .min()
            .or(statuses().next())
        {
            Some(status) => status,
            None => return mock_error(&format!("{} documents no response", operation.id), request_id),
        },
    };
    let Some(response) = responses
        .and_then(|r| r.get(status))
        .and_then(|r| spec.resolve(r).ok())
    else {
        return mock_error(
            &format!("{} response {status} cannot be resolved", operation.id),
            request_id,
        );
    };
    let status_code = status
        .parse()
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut builder = Response::builder().status(status_code);

    for (name, header) in response
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        // `handle` gives every answer its request's own id.
        if name.eq_ignore_ascii_case("x-request-id") {
            continue;
        }
        let Ok(header) = spec.resolve(header) else {
            continue;
        };
        let value = header
            .get("example")
            .or_else(|| {
                header
                    .get("schema")
                    .and_then(|s| spec.resolve(s).ok())
                    .and_then(|s| s.get("example"))
            })
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
        if let (Some(value), Ok(name)) = (value, HeaderName::try_from(name.as_str())) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                builder = builder.header(name, value);
            }
        }
    }

    let Some(content) = response.get("content").and_then(Value::as_object) else {
        return builder.body(Full::new(Bytes::new())).expect("valid response");
    };
    // The media type the client accepts, else JSON, else any that has an example to serve.
    let has_example = |media: &Value| media.get("example").is_some() || media.get("examples").is_some();
    let (media_type, media) = content
        .iter()
        .find(|(m, _)| accept.is_some_and(|accept| accept.contains(m.as_str())))
        .or_else(|| content.iter().find(|(m, _)| m.as_str() == "application/json"))
        .or_else(|| content.iter().find(|(_, media)| has_example(media)))
        .or_else(|| content.iter().next())
        .expect("content has a media type");
    let example = if preferences.dynamic {
        let schema = media.get("schema");
        let generated = schema.and_then(|schema| {
            dynamic::generate(spec, schema, &mut dynamic::rng(seed, operation.id, status), 0)
        });
        if generated.is_none() {
            return mock_error(
                &format!(
                    "{} response {status} ({media_type}) has no schema to generate data from",
                    operation.id
                ),
                request_id,
            );
        }
        generated.map(Cow::Owned)
    } else {
        match example_name {
            Some(name) => match media.get("examples").and_then(|e| e.get(name)) {
                Some(example) => spec
                    .resolve(example)
                    .ok()
                    .and_then(|e| e.get("value"))
                    .map(Cow::Borrowed),
                None => {
                    let names: Vec<&String> = media
                        .get("examples")
                        .and_then(Value::as_object)
                        .map(|e| e.keys().collect())
                        .unwrap_or_default();
                    return mock_error(
                        &format!(
                            "{} response {status} has no example named {name:?} (it has {names:?})",
                            operation.id
                        ),
                        request_id,
                    );
                }
            },
            None => media
                .get("examples")
                .and_then(Value::as_object)
                .and_then(|e| e.values().next())
                .and_then(|e| spec.resolve(e).ok())
                .and_then(|e| e.get("value"))
                .or_else(|| media.get("example"))
                .or_else(|| {
                    media
                        .get("schema")
                        .and_then(|s| spec.resolve(s).ok())
                        .and_then(|s| s.get("example"))
                })
                .map(Cow::Borrowed),
        }
    };
    let Some(mut example) = example else {
        return mock_error(
            &format!(
                "{} response {status} ({media_type}) has no example to serve",
                operation.id
            ),
            request_id,
        );
    };
    // Error envelopes carry the request's own id, as the real server's do.
    if example.pointer("/error/request_id").is_some() {
        if let Some(id) = example.to_mut().pointer_mut("/error/request_id") {
            *id = Value::from(request_id);
        }
    }
    let body = match (example.as_ref(), media_type.as_str()) {
        (Value::String(text), media) if media != "application/json" => Bytes::from(text.clone()),
        (example, _) => Bytes::from(serde_json::to_vec(example).expect("JSON serialises")),
    };
    builder
        .header(header::CONTENT_TYPE, media_type.as_str())
        .body(Full::new(body))
        .expect("valid response")
}

/// The code of the mock's own `500`, when it cannot answer as asked (a `Prefer` the spec has
/// no response or example for). Not one of the API's codes (`ErrorCode`), and so not in the
/// spec: the server never sends it, a client sees it only when its request asked the mock for
/// something the spec does not have.
const MOCK_CANNOT_ANSWER: &str = "mock_cannot_answer";

/// The mock cannot answer as asked: a 500 that says why.
fn mock_error(why: &str, request_id: &str) -> Response<Full<Bytes>> {
    let body = ErrorBody {
        code: MOCK_CANNOT_ANSWER.to_string(),
        message: why.to_string(),
        details: Vec::new(),
        request_id: String::new(),
        retry_after_seconds: None,
    };
    envelope(StatusCode::INTERNAL_SERVER_ERROR, body, request_id)
}

fn no_content() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}

/// An error in the envelope the server sends (`exports_spec::errors::envelope`), with the
/// request's id.
fn envelope(status: StatusCode, body: ErrorBody, request_id: &str) -> Response<Full<Bytes>> {
    errors::envelope(status, body, request_id).map(Full::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prism_style_preferences() {
        let mut headers = http::HeaderMap::new();
        headers.insert("prefer", "code=429, example=limit_reached".parse().unwrap());
        headers.append("prefer", "latency=250".parse().unwrap());
        assert_eq!(
            preferences(&headers),
            Preferences {
                code: Some(429),
                example: Some("limit_reached".into()),
                latency: Some(Duration::from_millis(250)),
                dynamic: false,
            }
        );
        assert_eq!(preferences(&http::HeaderMap::new()), Preferences::default());
    }

    #[test]
    fn routes_by_template() {
        let spec = Spec::bundled();
        let found = routes(&spec, "/api/v1/exports/users/abc");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1["export_id"], "abc");
        assert!(routes(&spec, "/nowhere").is_empty());
    }
}
