//! The one error envelope of the API, `{"error": {"code", "message", "details", "request_id"}}`,
//! as a dropshot error type, so every handler and extractor error takes this shape.

use dropshot::{ErrorStatusCode, HttpError, HttpResponseError};
use schemars::JsonSchema;
use serde::Serialize;

/// Every error the API returns. Documented as `ErrorResponse` in the OpenAPI document.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "ErrorResponse")]
pub struct ApiError {
    #[serde(skip)]
    status: ErrorStatusCode,
    /// What the logs get on top of the public message (never sent to the client).
    #[serde(skip)]
    internal: Option<String>,
    /// Boxed to keep `Result<_, ApiError>` small on the happy path.
    pub error: Box<ErrorBody>,
}

#[derive(Debug, Serialize, JsonSchema)]
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
    #[schemars(schema_with = "crate::model::count")]
    pub retry_after_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// Dotted location of the problem, e.g. `filters.created_after`.
    pub field: String,
    /// What is wrong with it.
    pub issue: String,
    /// The allowed values, when the field is an enumeration. Left out (never null) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<String>")]
    pub allowed: Option<Vec<String>>,
}

impl ErrorDetail {
    pub fn new(field: impl Into<String>, issue: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            issue: issue.into(),
            allowed: None,
        }
    }

    pub fn with_allowed(mut self, allowed: &[&str]) -> Self {
        self.allowed = Some(allowed.iter().map(|s| s.to_string()).collect());
        self
    }
}

impl ApiError {
    pub fn new(status: ErrorStatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            internal: None,
            error: Box::new(ErrorBody {
                code: code.to_string(),
                message: message.into(),
                details: Vec::new(),
                request_id: String::new(),
                retry_after_seconds: None,
            }),
        }
    }

    pub fn with_details(mut self, details: Vec<ErrorDetail>) -> Self {
        self.error.details = details;
        self
    }

    pub fn with_request_id(mut self, request_id: &str) -> Self {
        self.error.request_id = request_id.to_string();
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.error.retry_after_seconds = Some(seconds);
        self
    }

    pub fn invalid_request(details: Vec<ErrorDetail>) -> Self {
        let message = match details.as_slice() {
            [one] => format!("Invalid request: {} {}.", one.field, one.issue),
            _ => format!("Invalid request: {} problems, see details.", details.len()),
        };
        Self::new(ErrorStatusCode::BAD_REQUEST, "invalid_request", message).with_details(details)
    }

    pub fn unauthorized(issue: &str) -> Self {
        Self::new(
            ErrorStatusCode::UNAUTHORIZED,
            "unauthorized",
            "A valid API key is required: send `Authorization: Bearer <key>`.",
        )
        .with_details(vec![ErrorDetail::new("Authorization", issue)])
    }

    pub fn forbidden(scope: &str) -> Self {
        Self::new(
            ErrorStatusCode::FORBIDDEN,
            "forbidden",
            format!("This API key lacks the {scope} scope."),
        )
        .with_details(vec![ErrorDetail::new(
            "scope",
            format!("this API key lacks the {scope} scope"),
        )])
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            ErrorStatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found."),
        )
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorStatusCode::CONFLICT, code, message)
    }

    pub fn gone(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorStatusCode::GONE, code, message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorStatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn timeout(seconds: u64) -> Self {
        Self::new(
            ErrorStatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("The request did not complete within its {seconds} s time limit."),
        )
    }

    pub fn unavailable(details: Vec<ErrorDetail>, retry_after: u64) -> Self {
        Self::new(
            ErrorStatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "A dependency of the service is unavailable; retry later.",
        )
        .with_details(details)
        .with_retry_after(retry_after)
    }

    /// A failure that is ours, not the caller's: the full error goes to the log only.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        let mut api_error = Self::new(
            ErrorStatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "An internal error occurred. Quote the request id when reporting it.",
        );
        api_error.internal = Some(format!("{error:#}"));
        api_error
    }

    pub fn status(&self) -> http::StatusCode {
        self.status.as_status()
    }

    pub fn internal_message(&self) -> Option<&str> {
        self.internal.as_deref()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.error.code,
            self.error.message
        )?;
        if let Some(internal) = &self.internal {
            write!(f, " ({internal})")?;
        }
        Ok(())
    }
}

impl HttpResponseError for ApiError {
    fn status_code(&self) -> ErrorStatusCode {
        self.status
    }
}

/// Errors raised by dropshot itself (extractors: malformed JSON, bad path or query parameters,
/// oversized bodies) take the envelope too. They carry no request id here: the edge fills it in.
impl From<HttpError> for ApiError {
    fn from(error: HttpError) -> Self {
        let message = error.external_message.clone();
        let status = error.status_code;
        let mut api_error = match status.as_u16() {
            400 if message.contains("exceeded maximum size") => Self::payload_too_large(format!(
                "The request body is too large: {}.",
                message.trim_start_matches("request body ")
            )),
            400 => Self::invalid_request(vec![extractor_error_detail(&message)]),
            415 => Self::new(status, "unsupported_media_type", message.clone()),
            404 => Self::new(status, "not_found", "No such resource.".to_string()),
            405 => Self::new(status, "method_not_allowed", message.clone()),
            code if code >= 500 => Self::internal(&error.internal_message),
            _ => Self::new(status, "invalid_request", message.clone()),
        };
        if api_error.internal.is_none() && error.internal_message != message {
            api_error.internal = Some(error.internal_message);
        }
        api_error
    }
}

/// The problem a dropshot extractor reported, named by field where its message allows.
fn extractor_error_detail(message: &str) -> ErrorDetail {
    if message.contains("pagination token") {
        ErrorDetail::new(
            "page_token",
            "is not a valid page token; pass next_page from the previous page unchanged",
        )
    } else if let Some(cause) = message.strip_prefix("unable to parse query string: ") {
        // `limit` is the only typed query parameter of the API (listExports).
        ErrorDetail::new("limit", format!("must be an integer from 1 to 100 ({cause})"))
    } else if message.contains("content-type") || message.contains("content type") {
        ErrorDetail::new("Content-Type", format!("must be application/json ({message})"))
    } else if message.contains("URL path") {
        ErrorDetail::new("path", message)
    } else {
        ErrorDetail::new("body", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_bodies_become_413() {
        let error = ApiError::from(HttpError::for_bad_request(
            None,
            "request body exceeded maximum size of 1024 bytes".to_string(),
        ));
        assert_eq!(error.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error.error.code, "payload_too_large");
    }

    #[test]
    fn malformed_json_is_an_invalid_body() {
        let error = ApiError::from(HttpError::for_bad_request(
            None,
            "unable to parse JSON body: expected value at line 1 column 1".to_string(),
        ));
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(error.error.details[0].field, "body");
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let detail = |message: &str| {
            ApiError::from(HttpError::for_bad_request(None, message.to_string()))
                .error
                .details[0]
                .clone()
        };
        let token = detail("unable to parse query string: failed to parse pagination token: Invalid padding");
        assert_eq!(token.field, "page_token");
        let limit =
            detail("unable to parse query string: invalid value: integer `0`, expected a nonzero u32");
        assert_eq!(limit.field, "limit");
        assert!(limit.issue.starts_with("must be an integer from 1 to 100"));
        assert_eq!(
            detail("unsupported content-type: text/plain").field,
            "Content-Type"
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let error = ApiError::internal("connection refused to 10.0.0.1");
        let body = serde_json::to_string(&error).unwrap();
        assert!(!body.contains("10.0.0.1"), "{body}");
        assert!(error.to_string().contains("10.0.0.1"));
    }
}
