//! The whole job, beside the generated operations: create an export (retried safely under
//! one `Idempotency-Key`), wait until it is final, and download its file into any writer.

use std::time::Duration;

use futures::TryStreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::types::{
    CreateUserExport, CreateUserExportIdempotencyKey, ErrorResponse, Export, ExportAccepted, ExportStatus,
};
use crate::Client;

/// Declares `ErrorCode` from one list, so that its variants, their spelling and `KNOWN`
/// cannot disagree.
macro_rules! error_codes {
    ($($variant:ident = $code:literal,)*) => {
        /// The API's error codes (`error.code`). The spec keeps `code` an open string so that
        /// a newer server can add codes: those arrive as `Other`.
        ///
        /// The API's own list is `exports_spec::errors::ErrorCode`; this one is kept beside it
        /// rather than re-exported from it, because the spec crate is the contract's tooling
        /// (a YAML loader, a JSON Schema validator, the whole document, tokio with every
        /// feature, webhook signing) and a service that embeds this client would build all of
        /// it for one enum. A test here (with the spec crate as a dev-dependency only) proves
        /// that both name the same codes.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum ErrorCode {
            $($variant,)*
            /// A code this client does not know (a newer server's).
            Other(String),
        }

        impl ErrorCode {
            /// Every code this client names, `Other` aside.
            #[cfg_attr(not(test), allow(dead_code))]
            pub(crate) const KNOWN: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as the API sends it, e.g. `not_found`.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $code,)*
                    Self::Other(code) => code,
                }
            }
        }

        impl From<&str> for ErrorCode {
            fn from(code: &str) -> Self {
                match code {
                    $($code => Self::$variant,)*
                    other => Self::Other(other.to_string()),
                }
            }
        }
    };
}

error_codes! {
    InvalidRequest = "invalid_request",
    Unauthorized = "unauthorized",
    Forbidden = "forbidden",
    InvalidDownloadLink = "invalid_download_link",
    DownloadLinkExpired = "download_link_expired",
    NotFound = "not_found",
    MethodNotAllowed = "method_not_allowed",
    ExportNotReady = "export_not_ready",
    ExportFinished = "export_finished",
    IdempotencyKeyInUse = "idempotency_key_in_use",
    ExportExpired = "export_expired",
    PayloadTooLarge = "payload_too_large",
    UriTooLong = "uri_too_long",
    IdempotencyKeyReused = "idempotency_key_reused",
    TooManyPendingExports = "too_many_pending_exports",
    TooManyWebhookEndpoints = "too_many_webhook_endpoints",
    WebhookUrlRefused = "webhook_url_refused",
    TooManyFailedAuthentications = "too_many_failed_authentications",
    RequestHeaderFieldsTooLarge = "request_header_fields_too_large",
    InternalError = "internal_error",
    ServiceUnavailable = "service_unavailable",
    Timeout = "timeout",
}

/// What went wrong in `create_export`, `wait_for_export` or `download_export_to`.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The API answered with its error envelope.
    #[error("{status} {code:?}: {message} (request {request_id})")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        request_id: String,
    },
    /// No answer, or one the client could not read (after the retries, for a create).
    #[error("talking to the API: {0}")]
    Transport(crate::Error<ErrorResponse>),
    #[error("the export failed: {}", .0.error_message.as_deref().unwrap_or("no reason given"))]
    Failed(Box<Export>),
    #[error("the export was cancelled")]
    Cancelled(Box<Export>),
    #[error("the export's file has expired")]
    Expired(Box<Export>),
    /// Still pending or processing at the deadline.
    #[error("the export was not finished in time ({:?})", .0.status)]
    OutOfTime(Box<Export>),
    #[error("writing the file: {0}")]
    Write(#[from] std::io::Error),
}

impl From<crate::Error<ErrorResponse>> for FlowError {
    fn from(error: crate::Error<ErrorResponse>) -> Self {
        match error {
            crate::Error::ErrorResponse(response) => {
                let status = response.status().as_u16();
                let error = response.into_inner().error;
                FlowError::Api {
                    status,
                    code: ErrorCode::from(error.code.as_str()),
                    message: error.message,
                    request_id: error.request_id,
                }
            }
            other => FlowError::Transport(other),
        }
    }
}

/// How long `create_export` keeps trying.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// Attempts in all, the first one included.
    pub attempts: u32,
    /// No attempt starts later than this after the first.
    pub within: Duration,
    /// The wait after the first transient failure, doubled after each (a `Retry-After`
    /// overrides it).
    pub backoff: Duration,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: 5,
            within: Duration::from_secs(60),
            backoff: Duration::from_millis(500),
        }
    }
}

/// Polling of `wait_for_export`: guided by the export's own estimate, kept within these.
const POLL_AT_LEAST: Duration = Duration::from_secs(1);
const POLL_AT_MOST: Duration = Duration::from_secs(5);

impl Client {
    /// Creates an export, retrying transient failures (no answer, `409
    /// idempotency_key_in_use`, `429` after its `Retry-After`, `503`) within `retries`.
    /// Every attempt carries the same fresh `Idempotency-Key`, so a retry of a create that
    /// reached the server gets its answer instead of making a second export.
    pub async fn create_export(
        &self,
        request: &CreateUserExport,
        retries: Retries,
    ) -> Result<ExportAccepted, FlowError> {
        let key: CreateUserExportIdempotencyKey = uuid::Uuid::new_v4()
            .to_string()
            .parse()
            .expect("a UUID is a valid key");
        let started = Instant::now();
        let mut backoff = retries.backoff;
        let mut attempt = 1;
        loop {
            let error = match self.create_user_export(Some(&key), request).await {
                Ok(accepted) => return Ok(accepted.into_inner()),
                Err(error) => error,
            };
            let wait = match transient(&error) {
                Some(retry_after) => retry_after.unwrap_or(backoff),
                None => return Err(error.into()),
            };
            if attempt >= retries.attempts || started.elapsed() + wait > retries.within {
                return Err(error.into());
            }
            tokio::time::sleep(wait).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    /// Polls the export until it is `done` (then returns it) or has stopped otherwise
    /// (`Failed` with its message, `Cancelled`, `Expired`), or until `deadline` has passed
    /// (`OutOfTime`). The interval follows `progress.estimated_seconds_remaining`, between 1
    /// and 5 seconds.
    pub async fn wait_for_export(
        &self,
        export_id: &uuid::Uuid,
        deadline: Duration,
    ) -> Result<Export, FlowError> {
        let until = Instant::now() + deadline;
        loop {
            let export = self.get_export(export_id).await?.into_inner();
            let export = match export.status {
                ExportStatus::Done => return Ok(export),
                ExportStatus::Failed => return Err(FlowError::Failed(Box::new(export))),
                ExportStatus::Cancelled => return Err(FlowError::Cancelled(Box::new(export))),
                ExportStatus::Expired => return Err(FlowError::Expired(Box::new(export))),
                ExportStatus::Pending | ExportStatus::Processing => export,
            };
            let now = Instant::now();
            if now >= until {
                return Err(FlowError::OutOfTime(Box::new(export)));
            }
            let estimate = export
                .progress
                .estimated_seconds_remaining
                .map(|seconds| Duration::from_secs(seconds.max(0) as u64))
                .unwrap_or(POLL_AT_LEAST);
            tokio::time::sleep(estimate.clamp(POLL_AT_LEAST, POLL_AT_MOST).min(until - now)).await;
        }
    }

    /// Streams the file of a `done` export into `writer`, never holding it whole in memory,
    /// and calls `progress` with the bytes written so far and the file's size when the server
    /// gave it. Returns the bytes written. A gzip-compressed export is written as the `.gz`
    /// file it is; [`Client::download_export_unpacked_to`] unpacks it.
    pub async fn download_export_to<W: AsyncWrite + Unpin>(
        &self,
        export_id: &uuid::Uuid,
        writer: &mut W,
        progress: impl FnMut(u64, Option<u64>),
    ) -> Result<u64, FlowError> {
        self.download(export_id, writer, progress, false).await
    }

    /// Like [`Client::download_export_to`], but a gzip-compressed export (`compression:
    /// gzip`) is unpacked on the way: `writer` gets the CSV or JSON Lines itself. `progress`
    /// counts the bytes downloaded (compressed) against the file's size; the result is the
    /// bytes written. Other exports are written as they are.
    pub async fn download_export_unpacked_to<W: AsyncWrite + Unpin>(
        &self,
        export_id: &uuid::Uuid,
        writer: &mut W,
        progress: impl FnMut(u64, Option<u64>),
    ) -> Result<u64, FlowError> {
        self.download(export_id, writer, progress, true).await
    }

    async fn download<W: AsyncWrite + Unpin>(
        &self,
        export_id: &uuid::Uuid,
        writer: &mut W,
        mut progress: impl FnMut(u64, Option<u64>),
        unpack: bool,
    ) -> Result<u64, FlowError> {
        let response = self.download_export(export_id).await?;
        let total = response
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse().ok());
        // The API serves a gzip-compressed export as `application/gzip` (no Content-Encoding).
        let gzip = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|media_type| media_type.as_bytes().starts_with(b"application/gzip"));
        let mut unpacker = (unpack && gzip).then(|| flate2::write::GzDecoder::new(Vec::new()));
        let mut chunks = response.into_inner().into_inner();
        let (mut downloaded, mut written) = (0u64, 0u64);
        while let Some(chunk) = chunks
            .try_next()
            .await
            .map_err(|error| FlowError::Transport(crate::Error::ResponseBodyError(error)))?
        {
            downloaded += chunk.len() as u64;
            match unpacker.as_mut() {
                None => {
                    writer.write_all(&chunk).await?;
                    written += chunk.len() as u64;
                }
                Some(unpacker) => {
                    // Unpacked a chunk at a time into a buffer that is emptied each time.
                    std::io::Write::write_all(unpacker, &chunk)?;
                    writer.write_all(unpacker.get_ref()).await?;
                    written += unpacker.get_ref().len() as u64;
                    unpacker.get_mut().clear();
                }
            }
            progress(downloaded, total);
        }
        if let Some(unpacker) = unpacker {
            // Checks the trailer (CRC and length) and writes what was left.
            let rest = unpacker.finish()?;
            writer.write_all(&rest).await?;
            written += rest.len() as u64;
        }
        writer.flush().await?;
        Ok(written)
    }
}

/// Whether a failed create may succeed if tried again, and after how long the server asked
/// for (`Retry-After`).
fn transient(error: &crate::Error<ErrorResponse>) -> Option<Option<Duration>> {
    match error {
        crate::Error::CommunicationError(_) => Some(None),
        crate::Error::ErrorResponse(response) => match response.status().as_u16() {
            409 if ErrorCode::from(response.error.code.as_str()) == ErrorCode::IdempotencyKeyInUse => {
                Some(None)
            }
            429 | 503 => Some(
                response
                    .error
                    .retry_after_seconds
                    .map(|seconds| Duration::from_secs(seconds.max(0) as u64)),
            ),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_a_newer_server_adds_are_kept() {
        assert_eq!(
            ErrorCode::from("idempotency_key_reused"),
            ErrorCode::IdempotencyKeyReused
        );
        assert_eq!(
            ErrorCode::from("some_future_code"),
            ErrorCode::Other("some_future_code".to_string())
        );
        assert_eq!(ErrorCode::from("some_future_code").as_str(), "some_future_code");
    }

    /// The client names exactly the API's codes, `exports_spec::errors::ErrorCode` (which the
    /// spec crate's own test holds to the spec's table): a code added there fails here until
    /// it is named here too.
    #[test]
    fn names_exactly_the_codes_of_the_api() {
        let named: std::collections::BTreeSet<&str> =
            ErrorCode::KNOWN.iter().map(ErrorCode::as_str).collect();
        assert_eq!(named.len(), ErrorCode::KNOWN.len(), "a code named twice");
        let api: std::collections::BTreeSet<&str> = exports_spec::errors::ErrorCode::ALL
            .iter()
            .map(|code| code.as_str())
            .collect();
        assert_eq!(named, api);
        for code in ErrorCode::KNOWN {
            assert_eq!(&ErrorCode::from(code.as_str()), code);
        }
    }
}
