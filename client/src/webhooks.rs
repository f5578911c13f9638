//! For receivers written in Rust: checks that a webhook delivery is ours and untouched, with
//! the official Standard Webhooks library (signature over `id.timestamp.body`, timestamps more
//! than 5 minutes off refused), and reads its event.

use crate::types::WebhookEvent;

/// Why a delivery is refused.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Not signed with this secret, altered, replayed too late, or without its headers.
    #[error("the delivery does not verify: {0:?}")]
    Signature(standardwebhooks::WebhookError),
    /// Signed, but not an event of this API (a newer server's event type, say).
    #[error("the delivery is not an event of this API: {0}")]
    Body(#[from] serde_json::Error),
}

/// Verifies a delivery (its headers and its body exactly as received) with the endpoint's
/// secret (`whsec_…`), and returns its event. Drop events whose `webhook-id` you have seen:
/// delivery is at least once.
pub fn verify_delivery(
    secret: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<WebhookEvent, DeliveryError> {
    standardwebhooks::Webhook::new(secret)
        .and_then(|webhook| webhook.verify(body, headers))
        .map_err(DeliveryError::Signature)?;
    Ok(serde_json::from_slice(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const BODY: &[u8] = br#"{"type":"export.cancelled","timestamp":"2025-06-02T09:20:47.305Z","data":{"export_id":"9d1e6a40-2c3b-4f8e-a715-6b0c9e2d4f58","type":"users","format":"xlsx","status":"cancelled","filters":{},"progress":{"rows_written":20250,"rows_total":48213,"percent":42.0,"estimated_seconds_remaining":null},"download_url":null,"download_expires_at":null,"error_message":null,"file_size_bytes":null,"created_at":"2025-06-02T09:20:41.208Z","updated_at":"2025-06-02T09:20:47.305Z","expires_at":null}}"#;

    fn signed(secret: &str, timestamp: i64, body: &[u8]) -> http::HeaderMap {
        let signature = standardwebhooks::Webhook::new(secret)
            .unwrap()
            .sign("evt_1", timestamp, body)
            .unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().unwrap());
        headers.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        headers
    }

    #[test]
    fn takes_a_fresh_signed_event_and_refuses_the_rest() {
        let now = chrono::Utc::now().timestamp();
        let event = verify_delivery(SECRET, &signed(SECRET, now, BODY), BODY).unwrap();
        assert_eq!(event.type_, crate::types::WebhookEventType::ExportCancelled);
        assert_eq!(event.data.status, crate::types::ExportStatus::Cancelled);

        let other = "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldCBhdCBhbGw=";
        let refused = |headers: &http::HeaderMap, body: &[u8]| {
            matches!(
                verify_delivery(SECRET, headers, body),
                Err(DeliveryError::Signature(_))
            )
        };
        assert!(refused(&signed(other, now, BODY), BODY), "another secret");
        assert!(
            refused(&signed(SECRET, now - 6 * 60, BODY), BODY),
            "six minutes old"
        );
        assert!(
            refused(&signed(SECRET, now + 6 * 60, BODY), BODY),
            "six minutes ahead"
        );
        let altered = String::from_utf8_lossy(BODY).replace("cancelled", "done");
        assert!(
            refused(&signed(SECRET, now, BODY), altered.as_bytes()),
            "an altered body"
        );
        assert!(refused(&http::HeaderMap::new(), BODY), "no headers");
    }
}
