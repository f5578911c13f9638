//! The one error envelope, `{"error": {"code", "message", "details", "request_id"}}`, and the
//! words in it that the server (its handlers and its edge) and the mock both say, so a form
//! built against the mock shows the same text against the server.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::Spec;

/// The largest request body the server takes by default (`--max-body-bytes`), and the mock.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Declares `ErrorCode` from one list, so that its variants, `ALL`, the wire spelling and the
/// status can never disagree with each other.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal, $status:ident;)*) => {
        /// Every code the API sends in `error.code`, with the status it comes with: the one
        /// list the server, the mock and the listener build their envelopes from. The spec
        /// documents them in the table of `ErrorBody.code` (`CODES_TABLE`), and
        /// [`code_differences`] (run by a unit test here and by `cargo xtask spec lint`) says
        /// where that table and this enum disagree. On the wire a code is its snake_case
        /// name ([`ErrorCode::as_str`]); `ErrorBody::code` stays a string, which the spec keeps
        /// open (not an enum) so that a newer server may add codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the spec's table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as sent, e.g. `too_many_pending_exports`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The one HTTP status this code is sent with.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

error_codes! {
    /// Invalid body, path or query parameter, or a request head that is not HTTP/1.1; see `details`.
    InvalidRequest = "invalid_request", BAD_REQUEST;
    /// Missing, unknown, revoked or expired API key, or an inactive user's.
    Unauthorized = "unauthorized", UNAUTHORIZED;
    /// The API key lacks the scope the operation needs.
    Forbidden = "forbidden", FORBIDDEN;
    /// A download link that was altered.
    InvalidDownloadLink = "invalid_download_link", FORBIDDEN;
    /// A download link past its `download_expires_at`.
    DownloadLinkExpired = "download_link_expired", FORBIDDEN;
    /// No such export (or webhook endpoint) for this user, or no such route.
    NotFound = "not_found", NOT_FOUND;
    /// The route exists but not with this HTTP method.
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    /// Download of an export that is not `done`.
    ExportNotReady = "export_not_ready", CONFLICT;
    /// Cancel of an export that is already in a final status.
    ExportFinished = "export_finished", CONFLICT;
    /// The per-user limit of webhook endpoints is reached.
    TooManyWebhookEndpoints = "too_many_webhook_endpoints", CONFLICT;
    /// A webhook URL the policy refuses (`webhook_url::check`).
    WebhookUrlRefused = "webhook_url_refused", UNPROCESSABLE_ENTITY;
    /// A create with this `Idempotency-Key` is still being handled.
    IdempotencyKeyInUse = "idempotency_key_in_use", CONFLICT;
    /// Download of an export whose file was deleted.
    ExportExpired = "export_expired", GONE;
    /// This `Idempotency-Key` was used with a different request.
    IdempotencyKeyReused = "idempotency_key_reused", UNPROCESSABLE_ENTITY;
    /// The request body exceeds the size limit.
    PayloadTooLarge = "payload_too_large", PAYLOAD_TOO_LARGE;
    /// The request target exceeds its limit.
    UriTooLong = "uri_too_long", URI_TOO_LONG;
    /// Too many header fields, or too many bytes of them.
    RequestHeaderFieldsTooLarge = "request_header_fields_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE;
    /// The per-user limit of pending exports is reached.
    TooManyPendingExports = "too_many_pending_exports", TOO_MANY_REQUESTS;
    /// Too many requests with a bad key came from the caller's address.
    TooManyFailedAuthentications = "too_many_failed_authentications", TOO_MANY_REQUESTS;
    /// A failure on the service's side.
    InternalError = "internal_error", INTERNAL_SERVER_ERROR;
    /// A dependency (PostgreSQL, Redis, the API server behind the edge) is unreachable.
    ServiceUnavailable = "service_unavailable", SERVICE_UNAVAILABLE;
    /// The request did not complete within its time limit.
    Timeout = "timeout", GATEWAY_TIMEOUT;
}

impl ErrorCode {
    /// The code spelled `code`, if it is one of ours.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|known| known.as_str() == code)
    }
}

/// A string that is not one of the [`ErrorCode`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownErrorCode(pub String);

impl std::fmt::Display for UnknownErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} is not an error code of the API", self.0)
    }
}

impl std::error::Error for UnknownErrorCode {}

impl std::str::FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::parse(code).ok_or_else(|| UnknownErrorCode(code.to_string()))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for ErrorCode {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the spec lists its error codes: a Markdown table, `| `code` | status | meaning |`,
/// in the description of `ErrorBody.code` (a JSON pointer into the document).
pub const CODES_TABLE: &str = "/components/schemas/ErrorBody/properties/code/description";

/// The codes the spec's table (`CODES_TABLE`) lists, with their statuses, in its order.
pub fn documented_codes(spec: &Spec) -> Result<Vec<(String, u16)>, String> {
    let table = spec
        .document()
        .pointer(CODES_TABLE)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the spec has no table of error codes at {CODES_TABLE}"))?;
    let mut codes = Vec::new();
    for line in table.lines().map(str::trim) {
        let Some(row) = line.strip_prefix("| `") else {
            continue;
        };
        let mut cells = row.split('|');
        let code = cells.next().unwrap_or_default().trim().trim_end_matches('`');
        let status = cells.next().unwrap_or_default().trim();
        let status = status.parse().map_err(|_| {
            format!("the error code table ({CODES_TABLE}) gives `{code}` the status {status:?}")
        })?;
        codes.push((code.to_string(), status));
    }
    if codes.is_empty() {
        return Err(format!("the error code table ({CODES_TABLE}) lists no code"));
    }
    Ok(codes)
}

/// Where the codes `spec` documents differ from [`ErrorCode::ALL`], one sentence each (empty
/// when they agree): a code of the table that is no `ErrorCode`, an `ErrorCode` the table
/// leaves out, a status that differs, a code listed twice, and an example envelope anywhere in
/// the document whose code is no `ErrorCode` or, under a response, is not of that response's
/// status.
pub fn code_differences(spec: &Spec) -> Vec<String> {
    let mut differences = Vec::new();
    let documented = match documented_codes(spec) {
        Ok(documented) => documented,
        Err(problem) => return vec![problem],
    };
    let mut seen: BTreeMap<&str, u16> = BTreeMap::new();
    for (code, status) in &documented {
        if seen.insert(code, *status).is_some() {
            differences.push(format!("error code `{code}` is listed twice in {CODES_TABLE}"));
        }
        match ErrorCode::parse(code) {
            None => differences.push(format!(
                "error code `{code}` is documented ({CODES_TABLE}) but is no exports_spec::errors::ErrorCode"
            )),
            Some(known) if known.status().as_u16() != *status => differences.push(format!(
                "error code `{code}` is documented with status {status}, but ErrorCode::{known:?} is sent with {}",
                known.status().as_u16()
            )),
            Some(_) => {}
        }
    }
    for known in ErrorCode::ALL {
        if !seen.contains_key(known.as_str()) {
            differences.push(format!(
                "ErrorCode::{known:?} (`{known}`, {}) is not documented in {CODES_TABLE}",
                known.status().as_u16()
            ));
        }
    }
    let mut examples = Vec::new();
    example_envelopes(spec.document(), String::new(), &mut examples);
    for (pointer, code) in examples {
        let Some(known) = ErrorCode::parse(code) else {
            differences.push(format!(
                "the example at {pointer} has error code `{code}`, which is no ErrorCode"
            ));
            continue;
        };
        if let Some(status) = response_status(&pointer) {
            if status != known.status().as_u16() {
                differences.push(format!(
                    "the example at {pointer} answers {status} with error code `{code}`, which is sent with {}",
                    known.status().as_u16()
                ));
            }
        }
    }
    differences
}

/// Every error envelope (`{"error": {"code": …, "message": …}}`) in the document, with its
/// JSON pointer.
fn example_envelopes<'v>(value: &'v Value, pointer: String, found: &mut Vec<(String, &'v str)>) {
    match value {
        Value::Object(members) => {
            let code = members
                .get("error")
                .filter(|error| error.get("message").is_some())
                .and_then(|error| error.get("code"))
                .and_then(Value::as_str);
            if let Some(code) = code {
                found.push((pointer.clone(), code));
            }
            for (key, member) in members {
                example_envelopes(member, format!("{pointer}/{}", crate::escape(key)), found);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                example_envelopes(item, format!("{pointer}/{index}"), found);
            }
        }
        _ => {}
    }
}

/// The status of the response a pointer stands under (`…/responses/409/…`), if any.
fn response_status(pointer: &str) -> Option<u16> {
    let mut segments = pointer.split('/');
    segments.find(|segment| *segment == "responses")?;
    segments.next()?.parse().ok()
}

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
    /// An envelope with no details, no request id (`envelope` fills it in) and no retry hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().to_string(),
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

/// The answer that carries an error: the one place the envelope becomes a response, for the
/// server's edge, the mock and the listener alike. It sets the body's `request_id`, sends it
/// as `application/json`, and adds `add_envelope_headers`' headers. Headers every answer
/// carries (`X-Request-Id`, `headers::add_common`, CORS) are the caller's to add.
pub fn envelope(status: StatusCode, mut body: ErrorBody, request_id: &str) -> http::Response<Bytes> {
    body.request_id = request_id.to_string();
    let mut response = http::Response::new(Bytes::from(body.to_json()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_envelope_headers(headers, status, body.retry_after_seconds);
    response
}

/// The headers an envelope brings with it, for one built here (`envelope`) or one a handler
/// wrote (the server's edge, rewriting dropshot's answers): `retry_after_seconds` repeated as
/// `Retry-After`, and a `401`'s challenge, `WWW-Authenticate: Bearer` (`auth::CHALLENGE`).
pub fn add_envelope_headers(
    response_headers: &mut HeaderMap,
    status: StatusCode,
    retry_after_seconds: Option<u64>,
) {
    if let Some(seconds) = retry_after_seconds {
        response_headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if status == StatusCode::UNAUTHORIZED {
        response_headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(crate::auth::CHALLENGE),
        );
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

    /// A list of an enumeration's values that is not a list, is empty or repeats a value.
    pub fn not_a_list_of<S: AsRef<str>>(names: &[S], got: &Value) -> String {
        let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
        format!(
            "must be a list of one or more of {}, each at most once, got {got}",
            names.join(", ")
        )
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
    ErrorBody::new(ErrorCode::NotFound, format!("{what} not found."))
}

/// `409 export_not_ready`: a download of an export in `status`, which has no file (yet).
pub fn export_not_ready(status: &str) -> ErrorBody {
    let message = match status {
        "pending" | "processing" => format!("The export is {status}; download it once it is done."),
        _ => format!("The export is {status} and has no file."),
    };
    ErrorBody::new(ErrorCode::ExportNotReady, message)
}

/// `409 export_finished`: a cancel of an export already in a final `status`.
pub fn export_finished(status: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::ExportFinished,
        format!("The export is already {status}; only pending or processing exports can be cancelled."),
    )
}

/// `410 export_expired`.
pub fn export_expired() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::ExportExpired,
        "The export's file has expired and was deleted.",
    )
}

/// `403 invalid_download_link`: a link whose signature does not match.
pub fn invalid_download_link() -> ErrorBody {
    let mut body = ErrorBody::new(
        ErrorCode::InvalidDownloadLink,
        "This download link is not valid; get a fresh one from getExport.",
    );
    body.details = vec![ErrorDetail::new("signature", "does not match the link")];
    body
}

/// A path no operation has.
pub fn no_route(path: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::NotFound, format!("No operation at {path}."))
}

/// A path whose operations take other methods (the `Allow` header lists them).
pub fn method_not_allowed(path: &str, method: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::MethodNotAllowed,
        format!("{path} does not support {method}."),
    )
}

/// `504 timeout`: the request ran past its time limit (a handler's, or the edge's wait for one).
pub fn timeout(seconds: u64) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Timeout,
        format!("The request did not complete within its {seconds} s time limit."),
    )
}

/// `429 too_many_failed_authentications`: the caller's address sent too many bad keys.
pub fn too_many_failed_authentications(retry_after_seconds: u64) -> ErrorBody {
    let mut body = ErrorBody::new(
        ErrorCode::TooManyFailedAuthentications,
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
        ErrorCode::PayloadTooLarge,
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
            ErrorCode::RequestHeaderFieldsTooLarge,
            format!(
                "The request head is too large to be read: at most {max_header_fields} header fields and about 400 KiB."
            ),
        ),
        414 => ErrorBody::new(
            ErrorCode::UriTooLong,
            "The request target is too long to be read: at most 64 KiB.",
        ),
        _ => ErrorBody::new(ErrorCode::InvalidRequest, "The request head is not valid HTTP/1.1."),
    }
}

/// `409 too_many_webhook_endpoints`: the user has `limit` endpoints already.
pub fn too_many_webhook_endpoints(limit: usize) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::TooManyWebhookEndpoints,
        format!("You already have {limit} webhook endpoints, the limit per user; delete one first."),
    )
}

/// `422 webhook_url_refused`: a well-formed URL the policy refuses (`webhook_url::check`):
/// the request is valid, what it names is not allowed (or not there).
pub fn webhook_url_refused(issue: &str) -> ErrorBody {
    let mut body = ErrorBody::new(
        ErrorCode::WebhookUrlRefused,
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
    fn every_code_is_spelled_one_way() {
        let mut spellings = std::collections::BTreeSet::new();
        for &code in ErrorCode::ALL {
            assert!(spellings.insert(code.as_str()), "{code} twice");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            assert_eq!(code.to_string(), code.as_str());
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, Value::from(code.as_str()));
            assert_eq!(serde_json::from_value::<ErrorCode>(json).unwrap(), code);
            let snake = code.as_str();
            assert!(
                snake.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{snake}"
            );
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
        assert_eq!(
            "mock_cannot_answer".parse::<ErrorCode>(),
            Err(UnknownErrorCode("mock_cannot_answer".into()))
        );
        assert!(serde_json::from_value::<ErrorCode>(Value::from("nope")).is_err());
    }

    #[test]
    fn the_bundled_spec_documents_exactly_the_codes_of_the_enum() {
        let spec = Spec::bundled();
        let documented = documented_codes(&spec).unwrap();
        assert_eq!(documented.len(), ErrorCode::ALL.len(), "{documented:?}");
        let differences = code_differences(&spec);
        assert!(differences.is_empty(), "{}", differences.join("\n"));
    }

    #[test]
    fn differences_between_the_spec_and_the_enum_are_named() {
        let mut document = Spec::bundled().document().clone();
        let table = document.pointer_mut(CODES_TABLE).unwrap();
        let edited = table
            .as_str()
            .unwrap()
            .lines()
            .filter(|line| !line.contains("`timeout`"))
            .map(|line| {
                if line.contains("`export_expired`") {
                    line.replace("410", "404")
                } else {
                    line.to_string()
                }
            })
            .chain(["| `brand_new` | 418 | A code of a newer spec. |".to_string()])
            .collect::<Vec<_>>()
            .join("\n");
        *table = Value::from(edited);
        let example = document
            .pointer_mut("/components/schemas/ErrorResponse/example/error/code")
            .unwrap();
        *example = Value::from("not_a_code");
        let differences = code_differences(&Spec::from_value(document).unwrap()).join("\n");
        for expected in [
            "error code `brand_new` is documented",
            "ErrorCode::Timeout (`timeout`, 504) is not documented",
            "error code `export_expired` is documented with status 404, but ErrorCode::ExportExpired is sent with 410",
            "the example at /components/schemas/ErrorResponse/example has error code `not_a_code`",
        ] {
            assert!(differences.contains(expected), "{expected}: {differences}");
        }
        assert_eq!(differences.lines().count(), 4, "{differences}");
    }

    #[test]
    fn an_example_under_a_response_has_a_code_of_its_status() {
        assert_eq!(
            response_status("/paths/~1a/get/responses/409/content/x/example"),
            Some(409)
        );
        assert_eq!(response_status("/components/responses/NotFound/content"), None);
        assert_eq!(response_status("/components/schemas/ErrorResponse/example"), None);
    }

    #[test]
    fn the_envelope_as_a_response() {
        let response = envelope(
            StatusCode::TOO_MANY_REQUESTS,
            too_many_failed_authentications(30),
            "r-1",
        );
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::RETRY_AFTER], "30");
        assert!(!headers.contains_key(header::WWW_AUTHENTICATE));
        let json: Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(json["error"]["request_id"], "r-1");
        assert_eq!(json["error"]["retry_after_seconds"], 30);

        let response = envelope(
            StatusCode::UNAUTHORIZED,
            crate::auth::unauthorized(crate::auth::MISSING),
            "r-2",
        );
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(response.headers().len(), 2);
    }

    #[test]
    fn the_envelope_leaves_out_what_is_absent() {
        let mut body = ErrorBody::new(ErrorCode::NotFound, "Export not found.");
        body.request_id = "r".into();
        let json: Value = serde_json::from_slice(&body.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "not_found", "message": "Export not found.", "details": [], "request_id": "r"}})
        );
    }
}
