//! One trace per export, over OTLP (OpenTelemetry), when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the SDK reads
//! the other `OTEL_*` variables (service name, resource, sampler, batching, headers, timeout).
//!
//! - Each API request is a span (a child of the caller's W3C `traceparent`, if it sent one),
//!   carrying the request id.
//! - A create stores its span's `traceparent` and its request id with the export
//!   (`db::exports::record_trace`), and each attempt of the job is a span of that trace, a child
//!   of the request's span; the first attempt's span is recorded too, and every later attempt
//!   links to it. Under an attempt: `export.query`, `export.file`, `export.upload`.
//!
//! Off (the default), nothing is installed: the spans are OpenTelemetry's no-op ones and no
//! attribute is built.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context as _, Result};
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Link, Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{global, Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Whether traces are exported (set once, at start).
static ON: AtomicBool = AtomicBool::new(false);
const TRACER: &str = "exports-server";

/// The span attributes of ours (OpenTelemetry's semantic conventions name the HTTP ones).
pub const REQUEST_ID: &str = "exports.request_id";
pub const EXPORT_ID: &str = "exports.export_id";
pub const ATTEMPT: &str = "exports.attempt";
pub const FORMAT: &str = "exports.format";
pub const ROWS: &str = "exports.rows";
pub const BYTES: &str = "exports.bytes";

/// Keeps the exporter; dropping it (when the process ends) sends the spans still batched.
pub struct Installed(Option<SdkTracerProvider>);

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            if let Err(error) = provider.shutdown() {
                tracing::warn!(%error, "could not send the last spans");
            }
        }
    }
}

fn set(variable: &str) -> Option<String> {
    std::env::var(variable)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// Installs the OTLP exporter if the environment asks for one; `service` is the default
/// `service.name` (`OTEL_SERVICE_NAME` overrides it).
pub fn init(service: &'static str) -> Result<Installed> {
    let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = set("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|value| value.eq_ignore_ascii_case("none"));
    let Some(endpoint) = endpoint.filter(|_| !disabled) else {
        return Ok(Installed(None));
    };
    let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
    let protocol = match protocol.as_deref() {
        None | Some("http/protobuf") => opentelemetry_otlp::Protocol::HttpBinary,
        Some("http/json") => opentelemetry_otlp::Protocol::HttpJson,
        Some(other) => bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL is {other:?}: traces go over OTLP/HTTP, \"http/protobuf\" \
             (the default) or \"http/json\" (an OpenTelemetry Collector takes both on port 4318)"
        ),
    };
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .context("setting up the OTLP trace exporter (OTEL_EXPORTER_OTLP_*)")?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = set("OTEL_SERVICE_NAME").is_some()
        || set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attributes| attributes.contains("service.name="));
    if !named {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    global::set_tracer_provider(provider.clone());
    ON.store(true, Ordering::Relaxed);
    tracing::info!(%endpoint, "traces exported over OTLP");
    Ok(Installed(Some(provider)))
}

fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Runs `future` in `context` (its spans children of the context's), or as it is when traces
/// are off: no context is attached at each poll then.
pub async fn within<F: std::future::Future>(context: &Context, future: F) -> F::Output {
    if on() {
        future.with_context(context.clone()).await
    } else {
        future.await
    }
}

fn tracer() -> global::BoxedTracer {
    global::tracer(TRACER)
}

/// The request id, carried in the request's context for the handlers that store it.
struct RequestId(String);

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The span of an API request, `route` giving its path as the spec writes it; run the
/// handler `within` the context this returns, then `end_request`.
pub fn request<'r>(
    headers: &http::HeaderMap,
    method: &http::Method,
    route: impl FnOnce() -> &'r str,
    request_id: &str,
) -> Context {
    if !on() {
        return Context::new();
    }
    let route = route();
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let span = tracer()
        .span_builder(format!("{method} {route}"))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("http.route", route.to_string()),
            KeyValue::new(REQUEST_ID, request_id.to_string()),
        ])
        .start_with_context(&tracer(), &parent);
    parent
        .with_span(span)
        .with_value(RequestId(request_id.to_string()))
}

/// Ends a request's span with its status and caller.
pub fn end_request(context: &Context, status: u16, user_id: Option<&str>) {
    if !on() {
        return;
    }
    let span = context.span();
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
    if let Some(user_id) = user_id {
        span.set_attribute(KeyValue::new("user.id", user_id.to_string()));
    }
    if status >= 500 {
        span.set_status(Status::error(format!("answered {status}")));
    }
    span.end();
}

/// Where an export's trace began, stored with the export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceOrigin {
    /// The create request's span, as a W3C `traceparent`.
    pub traceparent: Option<String>,
    pub request_id: Option<String>,
    /// The span of the export's first attempt, which later attempts link to.
    pub first_attempt: Option<String>,
}

/// The current request's trace origin, for a create to store (none when tracing is off).
pub fn origin() -> Option<TraceOrigin> {
    if !on() {
        return None;
    }
    let context = Context::current();
    Some(TraceOrigin {
        traceparent: traceparent(&context),
        request_id: context.get::<RequestId>().map(|id| id.0.clone()),
        first_attempt: None,
    })
}

/// The span of `context` as a W3C `traceparent`, if it has a valid one.
pub fn traceparent(context: &Context) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(context, &mut carrier);
    carrier.remove("traceparent")
}

fn remote(traceparent: &str) -> Context {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The span of one attempt of an export's job: a child of the request that created it, linked
/// to the export's first attempt when this is a later one. Run the attempt in the context this
/// returns; `traceparent` of it is what to record as the first attempt when none is.
pub fn attempt(origin: &TraceOrigin, export_id: uuid::Uuid, attempt: i32, format: &str) -> Context {
    if !on() {
        return Context::new();
    }
    let parent = origin.traceparent.as_deref().map_or_else(Context::new, remote);
    let mut attributes = vec![
        KeyValue::new(EXPORT_ID, export_id.to_string()),
        KeyValue::new(ATTEMPT, i64::from(attempt)),
        KeyValue::new(FORMAT, format.to_string()),
    ];
    if let Some(request_id) = &origin.request_id {
        attributes.push(KeyValue::new(REQUEST_ID, request_id.clone()));
    }
    let links = origin
        .first_attempt
        .as_deref()
        .map(|first| remote(first).span().span_context().clone())
        .filter(|first| first.is_valid())
        .map(|first| vec![Link::with_context(first)])
        .unwrap_or_default();
    let span = tracer()
        .span_builder("export")
        .with_kind(SpanKind::Consumer)
        .with_attributes(attributes)
        .with_links(links)
        .start_with_context(&tracer(), &parent);
    parent.with_span(span)
}

/// A step of the current attempt (`export.query`, `export.file`, `export.upload`), ended by
/// `end_step` (or when dropped).
pub fn step(name: &'static str) -> global::BoxedSpan {
    tracer().start(name)
}

/// Ends the current attempt's span with what became of it.
pub fn end_attempt(context: &Context, error: Option<String>, attributes: Vec<KeyValue>) {
    if !on() {
        return;
    }
    let span = context.span();
    span.set_attributes(attributes);
    if let Some(error) = error {
        span.set_status(Status::error(error));
    }
    span.end();
}

/// Ends a step, with its error if it failed.
pub fn end_step<T>(mut span: global::BoxedSpan, outcome: &Result<T, impl std::fmt::Display>) {
    if let Err(error) = outcome {
        span.set_status(Status::error(format!("{error:#}")));
    }
    span.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_goes_out_as_it_came_in() {
        let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(&remote(sent)).as_deref(), Some(sent));
        assert_eq!(traceparent(&remote("garbage")), None);
    }
}
