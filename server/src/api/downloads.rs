//! Files of finished exports: streamed from storage by `downloadExport` and signed links, and
//! the export's view with a freshly minted link.

use bytes::Bytes;
use dropshot::Body;
use exports_spec::errors;
use futures::{StreamExt, TryStreamExt};
use http::Response;

use super::error::{ApiError, ErrorDetail, DEPENDENCY_RETRY_AFTER_SECONDS};
use super::request::FileResponse;
use super::state::AppState;
use crate::db::exports;
use crate::model::{Export, ExportStatus};
use crate::throughput::Rates;
use crate::views;

/// The file of a `done` export, streamed from storage; the errors of an export without one.
pub(super) async fn file_response(
    state: &AppState,
    row: &exports::ExportRow,
) -> Result<FileResponse, ApiError> {
    match row.status {
        ExportStatus::Pending | ExportStatus::Processing | ExportStatus::Failed | ExportStatus::Cancelled => {
            Err(ApiError::of(errors::export_not_ready(row.status.as_str())))
        }
        ExportStatus::Expired => Err(ApiError::of(errors::export_expired())),
        ExportStatus::Done => {
            let key = row
                .file_key
                .as_deref()
                .ok_or_else(|| ApiError::internal("a done export without a file"))?;
            let mut chunks = match state.storage.read(key).await {
                Ok(chunks) => chunks,
                Err(error) if is_not_found(&error) => {
                    // Deleted by the expiry sweep an instant ago.
                    return Err(ApiError::of(errors::export_expired()));
                }
                Err(error) => {
                    tracing::error!(error = %format!("{error:#}"), "file storage unreachable");
                    return Err(ApiError::unavailable(
                        vec![ErrorDetail::new("storage", "unreachable")],
                        DEPENDENCY_RETRY_AFTER_SECONDS,
                    ));
                }
            };
            // The body is fed through a channel: the store's stream is not `Sync`, which
            // dropshot's body must be.
            let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
            tokio::spawn(async move {
                while let Some(chunk) = chunks.next().await {
                    let chunk = chunk.map_err(std::io::Error::other);
                    if sender.send(chunk).await.is_err() {
                        break;
                    }
                }
            });
            let frames =
                futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).map_ok(hyper::body::Frame::data);
            let mut response = Response::builder()
                .header(http::header::CONTENT_TYPE, row.file.content_type())
                .header(
                    http::header::CONTENT_DISPOSITION,
                    row.file.content_disposition(row.id),
                );
            if let Some(size) = row.file_size_bytes {
                response = response.header(http::header::CONTENT_LENGTH, size);
            }
            let response = response
                .body(Body::wrap(http_body_util::StreamBody::new(frames)))
                .map_err(ApiError::internal)?;
            Ok(FileResponse(response))
        }
    }
}

fn is_not_found(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<object_store::Error>(),
        Some(object_store::Error::NotFound { .. })
    )
}

/// The API view of an export, with a freshly minted download link when it is done.
pub(super) async fn export_view(
    state: &AppState,
    row: &exports::ExportRow,
    rates: &Rates,
) -> Result<Export, ApiError> {
    let mut export = views::export(row, rates);
    if let (ExportStatus::Done, Some(key)) = (row.status, row.file_key.as_deref()) {
        let link = state
            .storage
            .download_link(row.id, key, &row.file, &state.public_url)
            .await
            .map_err(ApiError::internal)?;
        export.download_url = Some(link.url);
        export.download_expires_at = Some(link.expires_at);
    }
    Ok(export)
}
