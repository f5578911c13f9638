//! The one error envelope, `{"error": {"code", "message", "details", "request_id"}}`, and the
//! words in it that the server (its handlers and its edge) and the mock both say, so a form
//! built against the mock shows the same text against the server.

use serde::Serialize;
use serde_json::Value;

/// The largest request body the server takes by default (`--max-body-bytes`), and the mock.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// What went wrong, for programs (`code`, `details`) and for humans (`message`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_request` or `too_many_pending_exports`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Field-level problems (may be empty).
    pub details: Vec<ErrorDetail>,
    /// The request id, also sent as the `X-Request-Id` response header.
    pub request_id: String,
    /// Seconds to wait before retrying; the same value as the `Retry-After` header. Left out
    /// (never null) when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schemars", schemars(schema_with = "crate::schema::count"))]
    pub retry_after_seconds: Option<u64>,
}

/// One problem with one part of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct ErrorDetail {
    /// Dotted location of the problem, e.g. `filters.created_after`.
    pub field: String,
    /// What is wrong with it.
    pub issue: String,
    /// The allowed values, when the field is an enumeration. Left out (never null) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schemars", schemars(with = "Vec<String>"))]
    pub allowed: Option<Vec<String>>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
            details: Vec::new(),
            request_id: String::new(),
            retry_after_seconds: None,
        }
    }

    /// The envelope as sent: `{"error": …}`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "error": self })).expect("JSON serialises")
    }
}

impl ErrorDetail {
    pub fn new(field: impl Into<String>, issue: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            issue: issue.into(),
            allowed: None,
        }
    }

    pub fn with_allowed<S: AsRef<str>>(mut self, allowed: &[S]) -> Self {
        self.allowed = Some(allowed.iter().map(|s| s.as_ref().to_string()).collect());
        self
    }
}

/// The `message` of a `400 invalid_request`: the one problem in words, or how many there are.
pub fn invalid_request_message(details: &[ErrorDetail]) -> String {
    match details {
        [one] => format!("Invalid request: {} {}.", one.field, one.issue),
        _ => format!("Invalid request: {} problems, see details.", details.len()),
    }
}

/// The issues of a detail, in the words both sides use.
pub mod issue {
    use super::*;

    pub const REQUIRED: &str = "is required";
    pub const UNKNOWN_FIELD: &str = "is not a known field";
    pub const NOT_A_PAGE_TOKEN: &str =
        "is not a valid page token; pass next_page from the previous page unchanged";

    /// An enumeration's value that is not one of its names.
    pub fn not_one_of<S: AsRef<str>>(names: &[S], got: &Value) -> String {
        let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
        format!("must be one of {}, got {got}", names.join(", "))
    }

    /// A value of the wrong JSON type; `expected` reads "an object", "a string".
    pub fn not_of_type(expected: &str, got: &Value) -> String {
        format!("must be {expected}, got {}", kind(got))
    }

    pub fn not_a_date(got: &Value) -> String {
        format!("must be a date in YYYY-MM-DD form (RFC 3339 full-date), got {got}")
    }

    pub fn not_a_uuid(got: &Value) -> String {
        format!("must be a UUID, got {got}")
    }

    /// A bounded integer (a query parameter as sent, or a JSON number) out of its bounds.
    pub fn not_in_range(minimum: i64, maximum: i64, got: &Value) -> String {
        format!("must be an integer from {minimum} to {maximum}, got {got}")
    }

    /// A string outside its length bounds or pattern.
    pub fn not_text_of_form(min_length: u64, max_length: u64, pattern: &str) -> String {
        format!("must be {min_length} to {max_length} characters matching {pattern}")
    }

    pub fn not_json(error: impl std::fmt::Display) -> String {
        format!("is not valid JSON: {error}")
    }

    /// "a string", "an object": a JSON value's type in words.
    pub fn kind(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// A request body as JSON, or the issue with it in the server's words: the server's framework
/// (dropshot) parses bodies with `serde_path_to_error`, which names where the parser stopped.
pub fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body)).map_err(issue::not_json)
}

/// `404 not_found` for a resource of the API (`what`: "Export").
pub fn not_found(what: &str) -> ErrorBody {
    ErrorBody::new("not_found", format!("{what} not found."))
}

/// `409 export_not_ready`: a download of an export in `status`, which has no file (yet).
pub fn export_not_ready(status: &str) -> ErrorBody {
    let message = match status {
        "pending" | "processing" => format!("The export is {status}; download it once it is done."),
        _ => format!("The export is {status} and has no file."),
    };
    ErrorBody::new("export_not_ready", message)
}

/// `409 export_finished`: a cancel of an export already in a final `status`.
pub fn export_finished(status: &str) -> ErrorBody {
    ErrorBody::new(
        "export_finished",
        format!("The export is already {status}; only pending or processing exports can be cancelled."),
    )
}

/// `410 export_expired`.
pub fn export_expired() -> ErrorBody {
    ErrorBody::new("export_expired", "The export's file has expired and was deleted.")
}

/// `403 invalid_download_link`: a link whose signature does not match.
pub fn invalid_download_link() -> ErrorBody {
    let mut body = ErrorBody::new(
        "invalid_download_link",
        "This download link is not valid; get a fresh one from getExport.",
    );
    body.details = vec![ErrorDetail::new("signature", "does not match the link")];
    body
}

/// A path no operation has.
pub fn no_route(path: &str) -> ErrorBody {
    ErrorBody::new("not_found", format!("No operation at {path}."))
}

/// A path whose operations take other methods (the `Allow` header lists them).
pub fn method_not_allowed(path: &str, method: &str) -> ErrorBody {
    ErrorBody::new("method_not_allowed", format!("{path} does not support {method}."))
}

/// `504 timeout`: the request ran past its time limit (a handler's, or the edge's wait for one).
pub fn timeout(seconds: u64) -> ErrorBody {
    ErrorBody::new(
        "timeout",
        format!("The request did not complete within its {seconds} s time limit."),
    )
}

/// `429 too_many_failed_authentications`: the caller's address sent too many bad keys.
pub fn too_many_failed_authentications(retry_after_seconds: u64) -> ErrorBody {
    let mut body = ErrorBody::new(
        "too_many_failed_authentications",
        format!(
            "Too many requests with a missing, unknown or revoked API key came from your address; \
             retry after {retry_after_seconds} seconds."
        ),
    );
    body.retry_after_seconds = Some(retry_after_seconds);
    body
}

pub fn payload_too_large(limit_bytes: usize) -> ErrorBody {
    ErrorBody::new(
        "payload_too_large",
        format!("The request body is too large: the limit is {limit_bytes} bytes."),
    )
}

/// What the HTTP layer answers to a request head it cannot read, before any handler sees it
/// (`exports_listener`): `431 request_header_fields_too_large` past its `max_header_fields` or
/// hyper's ~400 KiB head buffer, `414 uri_too_long` past hyper's 64 KiB target, and
/// `400 invalid_request` for a head that is not HTTP/1.1.
pub fn refused_head(status: u16, max_header_fields: usize) -> ErrorBody {
    match status {
        431 => ErrorBody::new(
            "request_header_fields_too_large",
            format!(
                "The request head is too large to be read: at most {max_header_fields} header fields and about 400 KiB."
            ),
        ),
        414 => ErrorBody::new(
            "uri_too_long",
            "The request target is too long to be read: at most 64 KiB.",
        ),
        _ => ErrorBody::new("invalid_request", "The request head is not valid HTTP/1.1."),
    }
}

/// `409 too_many_webhook_endpoints`: the user has `limit` endpoints already.
pub fn too_many_webhook_endpoints(limit: usize) -> ErrorBody {
    ErrorBody::new(
        "too_many_webhook_endpoints",
        format!("You already have {limit} webhook endpoints, the limit per user; delete one first."),
    )
}

/// `422 webhook_url_refused`: a well-formed URL the policy refuses (`webhook_url::check`):
/// the request is valid, what it names is not allowed (or not there).
pub fn webhook_url_refused(issue: &str) -> ErrorBody {
    let mut body = ErrorBody::new(
        "webhook_url_refused",
        format!("This webhook URL is refused: it {issue}."),
    );
    body.details = vec![ErrorDetail::new("url", issue)];
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_problem_is_the_message() {
        let one = [ErrorDetail::new("format", issue::REQUIRED)];
        assert_eq!(
            invalid_request_message(&one),
            "Invalid request: format is required."
        );
        let two = [one[0].clone(), ErrorDetail::new("limit", "x")];
        assert_eq!(
            invalid_request_message(&two),
            "Invalid request: 2 problems, see details."
        );
    }

    #[test]
    fn the_envelope_leaves_out_what_is_absent() {
        let mut body = ErrorBody::new("not_found", "Export not found.");
        body.request_id = "r".into();
        let json: Value = serde_json::from_slice(&body.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "not_found", "message": "Export not found.", "details": [], "request_id": "r"}})
        );
    }
}
