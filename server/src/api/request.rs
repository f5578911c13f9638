//! What every operation goes through: the caller's key and scope, the time limit, the
//! request id in errors, and the one log line per request.

use std::time::Instant;

use dropshot::{HttpResponseAccepted, HttpResponseHeaders, RequestContext, TypedBody};
use exports_spec::request::{Body, Sent};
use http::Response;
use serde_json::Value;

use super::after_auth::AfterAuth;
use super::auth::{self, Principal};
use super::error::{ApiError, ErrorDetail};
use super::idempotency;
use super::params::Lenient;
use super::state::AppState;
use crate::model::ExportAccepted;
use crate::telemetry;

/// The contract this server was built with.
pub(super) static SPEC: std::sync::LazyLock<exports_spec::Spec> =
    std::sync::LazyLock::new(exports_spec::Spec::bundled);

/// The request id: the edge's (an accepted incoming `X-Request-Id` or its own), else dropshot's.
fn request_id(rqctx: &RequestContext<AppState>) -> String {
    rqctx
        .request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| rqctx.request_id.clone())
}

/// The request's span (`telemetry`), named by its route as the spec writes it.
fn traced(
    rqctx: &RequestContext<AppState>,
    operation: &'static str,
    request_id: &str,
) -> opentelemetry::Context {
    let route = || {
        SPEC.operations()
            .into_iter()
            .find(|documented| documented.id == operation)
            .map_or(operation, |documented| documented.path)
    };
    telemetry::request(rqctx.request.headers(), rqctx.request.method(), route, request_id)
}

/// Runs an operation for an authenticated caller holding `scope`, once its request passes the
/// spec (`checked`): the time limit, the request id in errors, and the one log line per request.
pub(super) async fn authorized<B: RequestBody, T: SuccessStatus>(
    rqctx: &RequestContext<AppState>,
    operation: &'static str,
    scope: &'static str,
    body: B,
    run: impl AsyncFnOnce(&AppState, Principal, B::Value) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let state = rqctx.context();
    let started = Instant::now();
    let request_id = request_id(rqctx);
    let trace = traced(rqctx, operation, &request_id);
    let mut user_id = None;
    let limited = tokio::time::timeout(state.settings.request_timeout, async {
        let token = auth::bearer_token(rqctx.request.headers())?;
        state.rejected_keys.check(token)?;
        let client = state.database().await?;
        state.metrics.api_key_looked_up();
        let principal = auth::authenticate(&client, token).await.inspect_err(|error| {
            if error.status() == http::StatusCode::UNAUTHORIZED {
                state.rejected_keys.remember(token);
            }
        })?;
        drop(client);
        user_id = Some(principal.user_id);
        principal.require(scope)?;
        let body = checked(rqctx, operation, body).await?;
        run(state, principal, body).await
    });
    let outcome = telemetry::within(&trace, limited)
        .await
        .unwrap_or_else(|_| Err(ApiError::timeout(state.settings.request_timeout.as_secs())));
    logged(outcome, &request_id, operation, user_id, started, &trace)
}

/// Runs an operation that needs no key, once its request passes the spec, as `authorized` does.
pub(super) async fn public<T: SuccessStatus>(
    rqctx: &RequestContext<AppState>,
    operation: &'static str,
    run: impl AsyncFnOnce(&AppState) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let started = Instant::now();
    let request_id = request_id(rqctx);
    let trace = traced(rqctx, operation, &request_id);
    let state = rqctx.context();
    let checked_run = async {
        checked(rqctx, operation, NoBody).await?;
        run(state).await
    };
    let outcome = telemetry::within(
        &trace,
        tokio::time::timeout(state.settings.request_timeout, checked_run),
    )
    .await
    .unwrap_or_else(|_| Err(ApiError::timeout(state.settings.request_timeout.as_secs())));
    logged(outcome, &request_id, operation, None, started, &trace)
}

/// The request checked against its operation in the spec, the one validator of requests (the
/// mock calls the same `Spec::request_problems`): parameters and body, every problem at once.
/// Returns the body as the handler takes it.
async fn checked<B: RequestBody>(
    rqctx: &RequestContext<AppState>,
    operation: &str,
    body: B,
) -> Result<B::Value, ApiError> {
    let json = body.json(rqctx).await?;
    let request = &rqctx.request;
    let path = request.uri().path();
    let Some((documented, path_parameters)) = SPEC
        .operations_at(path)
        .into_iter()
        .find(|(documented, _)| documented.id == operation)
    else {
        return Err(ApiError::internal(format!(
            "{operation} is not documented at {path}"
        )));
    };
    let sent = Sent {
        path_parameters: &path_parameters,
        query: request.uri().query(),
        headers: request.headers(),
        body: json.as_ref().map_or(Body::Unread, Body::Json),
    };
    let problems = SPEC.request_problems(&documented, &sent);
    if !problems.is_empty() {
        return Err(ApiError::invalid_request(problems));
    }
    B::value(json)
}

/// The body an operation reads, once the caller's key is checked (`AfterAuth`), or `NoBody`.
pub(super) trait RequestBody {
    /// What the handler takes.
    type Value;

    /// The body as JSON, when the operation reads one.
    fn json(
        self,
        rqctx: &RequestContext<AppState>,
    ) -> impl std::future::Future<Output = Result<Option<Value>, ApiError>> + Send;

    /// The body, checked against the spec, as the handler takes it.
    fn value(json: Option<Value>) -> Result<Self::Value, ApiError>;
}

/// An operation without a body.
pub(super) struct NoBody;

impl RequestBody for NoBody {
    type Value = ();

    async fn json(self, _: &RequestContext<AppState>) -> Result<Option<Value>, ApiError> {
        Ok(None)
    }

    fn value(_: Option<Value>) -> Result<(), ApiError> {
        Ok(())
    }
}

impl<T> RequestBody for AfterAuth<TypedBody<Lenient<T>>>
where
    T: serde::de::DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static,
{
    type Value = T;

    async fn json(self, rqctx: &RequestContext<AppState>) -> Result<Option<Value>, ApiError> {
        Ok(Some(self.extract(rqctx).await?.into_inner().value))
    }

    fn value(json: Option<Value>) -> Result<T, ApiError> {
        // The spec has checked the body: a failure here is a type that says less than it.
        serde_json::from_value(json.unwrap_or_default())
            .map_err(|error| ApiError::invalid_request(vec![ErrorDetail::new("body", error.to_string())]))
    }
}

/// The status of a successful response, for the request log.
pub(super) trait SuccessStatus {
    fn status_code(&self) -> u16;
}

impl<T: dropshot::HttpCodedResponse> SuccessStatus for T {
    fn status_code(&self) -> u16 {
        T::STATUS_CODE.as_u16()
    }
}

/// A create's answer, and whether it is the replay of an earlier one.
pub(super) struct Accepted {
    pub answer: ExportAccepted,
    pub replayed: bool,
}

impl SuccessStatus for Accepted {
    fn status_code(&self) -> u16 {
        <HttpResponseAccepted<ExportAccepted> as dropshot::HttpCodedResponse>::STATUS_CODE.as_u16()
    }
}

impl From<Accepted> for HttpResponseHeaders<HttpResponseAccepted<ExportAccepted>> {
    fn from(Accepted { answer, replayed }: Accepted) -> Self {
        let mut response = HttpResponseHeaders::new_unnamed(HttpResponseAccepted(answer));
        if replayed {
            response.headers_mut().insert(
                idempotency::REPLAYED_HEADER,
                http::HeaderValue::from_static("true"),
            );
        }
        response
    }
}

/// A file download (a free-form response, which has no status of its own type).
pub(super) struct FileResponse(pub Response<dropshot::Body>);

impl SuccessStatus for FileResponse {
    fn status_code(&self) -> u16 {
        self.0.status().as_u16()
    }
}

/// The one log line of a request (its outcome, operation, caller and time), the end of its
/// span, and the request id on its error.
fn logged<T: SuccessStatus>(
    outcome: Result<T, ApiError>,
    request_id: &str,
    operation: &'static str,
    user_id: Option<uuid::Uuid>,
    started: Instant,
    trace: &opentelemetry::Context,
) -> Result<T, ApiError> {
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let user_id = user_id.map(|id| id.to_string());
    let status = match &outcome {
        Ok(response) => response.status_code(),
        Err(error) => error.status().as_u16(),
    };
    telemetry::end_request(trace, status, user_id.as_deref());
    match &outcome {
        Ok(_) => tracing::info!(request_id, operation, user_id, status, duration_ms, "request"),
        Err(error) if error.status().is_server_error() => tracing::error!(
            request_id, operation, user_id, status, duration_ms, error = %error, "request failed"
        ),
        Err(error) => tracing::info!(
            request_id, operation, user_id, status, duration_ms, code = %error.error.code, "request"
        ),
    }
    outcome.map_err(|error| error.with_request_id(request_id))
}
