//! The mock as a test sandbox (`--sandbox`; off unless asked for): a control surface under
//! `/__mock/`, which no path of the spec uses, for a frontend's tests to put the mock in the
//! state they need, as users of Prism, stripe-mock and WireMock ask of theirs.
//!
//! - `POST /__mock/reset`: forgets every export, idempotency key, webhook endpoint and fault,
//!   as a fresh start would; `204`.
//! - `POST /__mock/clock` with `{"advance_seconds": 3600}`: moves the mock's clock forward, so
//!   that exports due by then are `done` now (and announced to webhooks); time goes on passing
//!   from there; `200` with the clock's new time.
//! - `POST /__mock/failing-exports` with `{"count": 1, "error_message": "…"}` (both optional):
//!   the next `count` exports created end `failed` when they would have been done, with that
//!   message, announced as `export.failed`; `204`.
//! - `POST /__mock/failing-deliveries` with `{"endpoint_id": "…", "count": 3}`: the next
//!   `count` attempts to deliver an event to that webhook endpoint fail without being sent,
//!   and are retried as any failed attempt; `204`.
//! - `POST /__mock/faults` with `{"operation": "createUserExport", "status": 429, "count": 2}`:
//!   the next `count` (1 if left out) requests to that operation, once their key is accepted,
//!   answer that status as the spec documents it (its example body and headers, such as
//!   `Retry-After`), whatever they ask; `200` with what is queued. An operation the spec does
//!   not have, or a status it does not document for it as an error, is refused with `400` in
//!   the API's error envelope, naming the values allowed.
//!
//! Anything else under the prefix is `404` (or `405`), as an unknown path of the API is.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use exports_spec::errors::{self, ErrorBody, ErrorCode, ErrorDetail};
use exports_spec::{Operation, Spec};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

/// Where the control surface lives.
pub const PREFIX: &str = "/__mock/";

/// Faults queued for operations, by operation id: the statuses their next requests answer.
#[derive(Default)]
pub struct Sandbox {
    faults: Mutex<HashMap<String, VecDeque<u16>>>,
}

/// What a control request changes; the caller (the mock) applies all but `Answer` to its
/// state.
pub enum Control {
    Reset,
    Advance(std::time::Duration),
    FailExports { count: usize, message: String },
    FailDeliveries { endpoint_id: uuid::Uuid, count: u32 },
    Answer(Response<Full<Bytes>>),
}

/// What a failed export says unless the control gives its own message.
const FAILURE_MESSAGE: &str =
    "The export failed (the mock's sandbox made it fail). Create a new export to try again.";

/// The longest move of the clock at once: a year.
const MAX_ADVANCE_SECONDS: u64 = 365 * 24 * 3600;

impl Sandbox {
    /// The status the next request to `operation` must answer, if a fault is queued for it.
    pub fn take_fault(&self, operation: &str) -> Option<u16> {
        let mut faults = self.faults.lock().expect("faults lock");
        let queued = faults.get_mut(operation)?;
        let status = queued.pop_front();
        if queued.is_empty() {
            faults.remove(operation);
        }
        status
    }

    pub fn clear(&self) {
        self.faults.lock().expect("faults lock").clear();
    }

    /// Answers a request under [`PREFIX`].
    pub fn control(
        &self,
        spec: &Spec,
        method: &Method,
        path: &str,
        body: &[u8],
        request_id: &str,
    ) -> Control {
        let refusal = |status, body| errors::envelope(status, body, request_id).map(Full::new);
        let known = [
            "reset",
            "clock",
            "faults",
            "failing-exports",
            "failing-deliveries",
        ];
        let Some(name) = path.strip_prefix(PREFIX).filter(|name| known.contains(name)) else {
            return Control::Answer(refusal(StatusCode::NOT_FOUND, errors::no_route(path)));
        };
        if method != Method::POST {
            return Control::Answer(refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                errors::method_not_allowed(path, method.as_str()),
            ));
        }
        match name {
            "reset" => Control::Reset,
            "clock" => advance(body)
                .unwrap_or_else(|refused| Control::Answer(refusal(StatusCode::BAD_REQUEST, refused))),
            "failing-exports" => failing_exports(body)
                .unwrap_or_else(|refused| Control::Answer(refusal(StatusCode::BAD_REQUEST, refused))),
            "failing-deliveries" => failing_deliveries(body)
                .unwrap_or_else(|refused| Control::Answer(refusal(StatusCode::BAD_REQUEST, refused))),
            _ => Control::Answer(match self.queue(spec, body) {
                Ok(queued) => json_response(StatusCode::OK, &queued),
                Err(refused) => refusal(StatusCode::BAD_REQUEST, refused),
            }),
        }
    }

    /// Queues the fault a `POST /__mock/faults` body asks for.
    fn queue(&self, spec: &Spec, body: &[u8]) -> Result<Value, ErrorBody> {
        let request = object(body, &["operation", "status", "count"], "a fault")?;
        let operations: Vec<Operation> = spec.operations();
        let ids = || operations.iter().map(|operation| operation.id.to_string());
        let Some(operation) = request["operation"].as_str() else {
            return Err(invalid(
                "operation",
                "is required, as an operationId of the spec",
                Some(ids().collect()),
            ));
        };
        let Some(found) = operations.iter().find(|candidate| candidate.id == operation) else {
            return Err(invalid(
                "operation",
                format!("`{operation}` is not an operation of the spec"),
                Some(ids().collect()),
            ));
        };
        let documented: Vec<String> = (found.definition.get("responses").and_then(Value::as_object))
            .into_iter()
            .flat_map(|responses| responses.keys())
            .filter(|status| status.starts_with(['4', '5']) && status.parse::<u16>().is_ok())
            .cloned()
            .collect();
        let status = request["status"].as_u64().map(|status| status.to_string());
        let Some(status) = status.filter(|status| documented.contains(status)) else {
            return Err(invalid(
                "status",
                format!("must be an error status {operation} documents"),
                Some(documented),
            ));
        };
        let count = count(&request)? as usize;
        let status: u16 = status.parse().expect("checked above");
        let mut faults = self.faults.lock().expect("faults lock");
        let queued = faults.entry(operation.to_string()).or_default();
        queued.extend(std::iter::repeat_n(status, count));
        Ok(json!({"operation": operation, "status": status, "queued": queued.len()}))
    }
}

/// A `count` member: 1 when left out, else a whole number from 1 to 1000.
fn count(request: &Value) -> Result<u32, ErrorBody> {
    match &request["count"] {
        Value::Null => Ok(1),
        count => count
            .as_u64()
            .filter(|count| (1..=1000).contains(count))
            .map(|count| count as u32)
            .ok_or_else(|| invalid("count", "must be a whole number from 1 to 1000", None)),
    }
}

/// What a `POST /__mock/failing-exports` body asks for.
fn failing_exports(body: &[u8]) -> Result<Control, ErrorBody> {
    let request = object(body, &["count", "error_message"], "an export failure")?;
    let message = match &request["error_message"] {
        Value::Null => FAILURE_MESSAGE.to_string(),
        Value::String(message) if !message.trim().is_empty() => message.clone(),
        _ => return Err(invalid("error_message", "must be a text that is not empty", None)),
    };
    Ok(Control::FailExports {
        count: count(&request)? as usize,
        message,
    })
}

/// What a `POST /__mock/failing-deliveries` body asks for.
fn failing_deliveries(body: &[u8]) -> Result<Control, ErrorBody> {
    let request = object(body, &["endpoint_id", "count"], "a delivery failure")?;
    let endpoint_id = (request["endpoint_id"].as_str())
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| invalid("endpoint_id", "must be the id of a webhook endpoint", None))?;
    Ok(Control::FailDeliveries {
        endpoint_id,
        count: count(&request)?,
    })
}

/// The endpoint a delivery failure names is not one the mock has.
pub fn unknown_endpoint() -> ErrorBody {
    invalid("endpoint_id", "is not the id of a webhook endpoint", None)
}

/// The move a `POST /__mock/clock` body asks for.
fn advance(body: &[u8]) -> Result<Control, ErrorBody> {
    let request = object(body, &["advance_seconds"], "a clock move")?;
    match request["advance_seconds"].as_u64() {
        Some(seconds) if (1..=MAX_ADVANCE_SECONDS).contains(&seconds) => {
            Ok(Control::Advance(std::time::Duration::from_secs(seconds)))
        }
        _ => Err(invalid(
            "advance_seconds",
            format!("must be a whole number of seconds from 1 to {MAX_ADVANCE_SECONDS}"),
            None,
        )),
    }
}

/// A control request's body: a JSON object with none but the `known` members.
fn object(body: &[u8], known: &[&str], what: &str) -> Result<Value, ErrorBody> {
    let request: Value = serde_json::from_slice(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| invalid("body", "must be a JSON object", None))?;
    let unknown = (request.as_object().into_iter().flatten())
        .map(|(name, _)| name.as_str())
        .find(|name| !known.contains(name));
    match unknown {
        Some(unknown) => Err(invalid(
            unknown,
            format!("is not a member of {what}"),
            Some(known.iter().map(|name| name.to_string()).collect()),
        )),
        None => Ok(request),
    }
}

fn invalid(field: &str, issue: impl Into<String>, allowed: Option<Vec<String>>) -> ErrorBody {
    let detail = ErrorDetail {
        field: field.to_string(),
        issue: issue.into(),
        allowed,
    };
    let mut body = ErrorBody::new(
        ErrorCode::InvalidRequest,
        errors::invalid_request_message(std::slice::from_ref(&detail)),
    );
    body.details = vec![detail];
    body
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(value).expect("JSON serialises"),
        )))
        .expect("valid response")
}
