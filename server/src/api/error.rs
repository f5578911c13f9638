//! The one error envelope of the API (`exports_spec::errors`, which the mock shares) as a
//! dropshot error type, so every handler and extractor error takes this shape.

use dropshot::{ErrorStatusCode, HttpError, HttpResponseError};
use exports_spec::errors::{self, issue, ErrorCode};
pub use exports_spec::errors::{ErrorBody, ErrorDetail};
use schemars::JsonSchema;
use serde::Serialize;

/// `Retry-After` when PostgreSQL or Redis is unreachable.
pub const DEPENDENCY_RETRY_AFTER_SECONDS: u64 = 5;

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

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::of(errors::ErrorBody::new(code, message))
    }

    /// The answer a shared envelope (`exports_spec::errors`, `exports_spec::auth`) describes,
    /// with the status the spec gives its code.
    pub fn of(body: ErrorBody) -> Self {
        let status = ErrorCode::parse(&body.code)
            .and_then(|code| ErrorStatusCode::from_status(code.status()).ok())
            .unwrap_or(ErrorStatusCode::INTERNAL_SERVER_ERROR);
        Self {
            status,
            internal: None,
            error: Box::new(body),
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
        let message = errors::invalid_request_message(&details);
        Self::new(ErrorCode::InvalidRequest, message).with_details(details)
    }

    pub fn unauthorized(issue: &str) -> Self {
        Self::of(exports_spec::auth::unauthorized(issue))
    }

    pub fn forbidden(scope: &str) -> Self {
        Self::of(exports_spec::auth::forbidden(scope))
    }

    pub fn not_found(what: &str) -> Self {
        Self::of(errors::not_found(what))
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, message)
    }

    pub fn timeout(seconds: u64) -> Self {
        Self::of(errors::timeout(seconds))
    }

    pub fn unavailable(details: Vec<ErrorDetail>, retry_after: u64) -> Self {
        Self::new(
            ErrorCode::ServiceUnavailable,
            "A dependency of the service is unavailable; retry later.",
        )
        .with_details(details)
        .with_retry_after(retry_after)
    }

    /// Readiness once the server has been told to stop: load balancers take it out of rotation
    /// while it still serves what they send meanwhile.
    pub fn shutting_down() -> Self {
        Self::new(
            ErrorCode::ServiceUnavailable,
            "This server is shutting down; send requests to another instance.",
        )
        .with_details(vec![ErrorDetail::new("server", "shutting_down")])
        .with_retry_after(DEPENDENCY_RETRY_AFTER_SECONDS)
    }

    /// A failure that is ours, not the caller's: the full error goes to the log only.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        let mut api_error = Self::new(
            ErrorCode::InternalError,
            "An internal error occurred. Quote the request id when reporting it.",
        );
        api_error.internal = Some(format!("{error:#}"));
        api_error
    }

    pub fn status(&self) -> http::StatusCode {
        self.status.as_status()
    }
}

/// A failed statement is ours, not the caller's.
impl From<crate::db::Error> for ApiError {
    fn from(error: crate::db::Error) -> Self {
        Self::internal(error)
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
            404 => Self::new(ErrorCode::NotFound, "No such resource."),
            405 => Self::new(ErrorCode::MethodNotAllowed, message.clone()),
            code if code >= 500 => Self::internal(&error.internal_message),
            // dropshot answers nothing else; were it to, the caller's request is at fault.
            _ => Self::new(ErrorCode::InvalidRequest, message.clone()),
        };
        if api_error.internal.is_none() && error.internal_message != message {
            api_error.internal = Some(error.internal_message);
        }
        api_error
    }
}

/// The problem a dropshot extractor reported, named by field where its message allows.
/// `limit`, the only typed query parameter, is checked before extraction (`handlers::list_exports`),
/// so that its issue can quote the value sent.
fn extractor_error_detail(message: &str) -> ErrorDetail {
    if message.contains("pagination token") {
        ErrorDetail::new("page_token", issue::NOT_A_PAGE_TOKEN)
    } else if let Some(cause) = message.strip_prefix("unable to parse JSON body: ") {
        // No body at all: serde_json's words for it are "EOF … at line 1 column 0".
        if cause.ends_with("at line 1 column 0") {
            ErrorDetail::new("body", issue::REQUIRED)
        } else {
            ErrorDetail::new("body", issue::not_json(cause))
        }
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
        assert_eq!(
            error.error.details[0].issue,
            "is not valid JSON: expected value at line 1 column 1"
        );
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
