//! The API's views of stored rows: an export as `getExport` and webhook events show it (with
//! its estimate), and a webhook endpoint with or without its secret. The download link is
//! minted by the API (`api::downloads`), never stored.

use crate::db::exports::ExportRow;
use crate::db::webhooks::EndpointRow;
use crate::model::{
    Export, ExportProgress, ExportStatus, ExportType, WebhookEndpoint, WebhookEndpointWithSecret,
};
use crate::throughput::Rates;

/// An export as the API shows it, without its download link.
pub fn export(row: &ExportRow, rates: &Rates) -> Export {
    let percent = if row.status == ExportStatus::Done {
        100.0
    } else if row.rows_total == 0 {
        0.0
    } else {
        (row.rows_written as f64 * 100.0 / row.rows_total as f64).min(100.0)
    };
    let estimated_seconds_remaining = row
        .status
        .is_active()
        .then(|| rates.seconds_for(row.file.format, row.rows_total.saturating_sub(row.rows_written)));
    Export {
        export_id: row.id,
        export_type: ExportType::Users,
        format: row.file.format,
        status: row.status,
        filters: row.filters.clone(),
        columns: row.file.columns.clone(),
        compression: row.file.compression,
        progress: ExportProgress {
            rows_written: row.rows_written,
            rows_total: row.rows_total,
            percent,
            estimated_seconds_remaining,
        },
        download_url: None,
        download_expires_at: None,
        error_message: row.error_message.clone(),
        file_size_bytes: row.file_size_bytes,
        created_at: row.created_at,
        updated_at: row.updated_at,
        expires_at: row.expires_at,
    }
}

pub fn endpoint(row: &EndpointRow) -> WebhookEndpoint {
    WebhookEndpoint {
        endpoint_id: row.id,
        url: row.url.clone(),
        event_types: row.event_types.clone(),
        created_at: row.created_at,
    }
}

/// An endpoint with its signing secret, shown only when the secret is made.
pub fn endpoint_with_secret(row: &EndpointRow) -> WebhookEndpointWithSecret {
    WebhookEndpointWithSecret {
        endpoint_id: row.id,
        url: row.url.clone(),
        event_types: row.event_types.clone(),
        created_at: row.created_at,
        secret: row.secret.clone(),
    }
}
