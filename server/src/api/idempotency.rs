//! `Idempotency-Key` on `createUserExport` (the IETF HTTPAPI draft "The Idempotency-Key HTTP
//! Header Field", with Stripe's choices where the draft leaves them): the header, read as
//! sent and checked only after authentication, and the fingerprint that tells a retry from a
//! different request. What a key does is in `db::exports::create` and the migration V6.

use dropshot::{
    ApiEndpointBodyContentType, ExtractorMetadata, Header, HttpError, RequestContext, ServerContext,
    SharedExtractor,
};
use http::HeaderValue;
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ErrorDetail;
use crate::model::CreateUserExport;

pub const HEADER: &str = "Idempotency-Key";
/// The response header of a replayed answer (Stripe's name; the draft names none).
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";

/// The header as the OpenAPI document describes it.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)] // read by schemars only
struct Documented {
    /// A key of your choosing that makes retries of this create safe.
    #[serde(rename = "Idempotency-Key")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[\x20-\x7E]+$"))]
    idempotency_key: Option<String>,
}

/// The request's `Idempotency-Key` header values, unchecked. dropshot's `Header` extractor
/// would refuse a request (with a `400`, before the key is checked) for any header that is
/// not visible ASCII, ours or not; this one never fails, and `key` checks ours after
/// authentication.
pub struct IdempotencyKeyHeader(Vec<HeaderValue>);

#[async_trait::async_trait]
impl SharedExtractor for IdempotencyKeyHeader {
    async fn from_request<Context: ServerContext>(
        rqctx: &RequestContext<Context>,
    ) -> Result<Self, HttpError> {
        Ok(Self(
            rqctx.request.headers().get_all(HEADER).iter().cloned().collect(),
        ))
    }

    fn metadata(body_content_type: ApiEndpointBodyContentType) -> ExtractorMetadata {
        <Header<Documented> as SharedExtractor>::metadata(body_content_type)
    }
}

impl IdempotencyKeyHeader {
    /// The key, if one was sent: compared as sent (so the draft's quoted form and a bare UUID
    /// both work), in one header field. Its form (1 to 255 printable ASCII characters) is the
    /// spec's to check, before this is read.
    pub fn key(&self) -> Result<Option<&str>, ErrorDetail> {
        match self.0.as_slice() {
            [] => Ok(None),
            [value] => value
                .to_str()
                .map(Some)
                .map_err(|_| ErrorDetail::new(HEADER, "must be printable ASCII")),
            _ => Err(ErrorDetail::new(HEADER, "must be sent once")),
        }
    }
}

/// What makes two creates the same request, as the mock tells them apart too
/// (`exports_spec::files::create_identity`): the order of JSON members, white space, and
/// options left out or sent with their default values make no difference. A create without
/// the options of 1.9 hashes as it did before them, so keys remembered then still replay.
pub fn fingerprint(request: &CreateUserExport) -> [u8; 32] {
    let understood = serde_json::to_value(request).expect("a request serialises");
    let canonical =
        serde_json::to_vec(&exports_spec::files::create_identity(&understood)).expect("JSON serialises");
    Sha256::digest(canonical).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExportCompression, ExportFormat, UserColumn, UserExportFilters, UserStatus};

    fn header(values: &[&[u8]]) -> IdempotencyKeyHeader {
        IdempotencyKeyHeader(
            values
                .iter()
                .map(|v| HeaderValue::from_bytes(v).unwrap())
                .collect(),
        )
    }

    #[test]
    fn a_key_is_read_as_sent_from_one_field() {
        assert_eq!(header(&[]).key().unwrap(), None);
        assert_eq!(
            header(&[b"\"8e03978e-40d5\""]).key().unwrap(),
            Some("\"8e03978e-40d5\"")
        );
        assert_eq!(
            header(&[b"a", b"b"]).key().unwrap_err().issue,
            "must be sent once"
        );
    }

    #[test]
    fn equal_requests_have_equal_fingerprints() {
        let request = |filters| CreateUserExport {
            format: ExportFormat::Csv,
            filters,
            columns: None,
            compression: None,
        };
        assert_eq!(
            fingerprint(&request(None)),
            fingerprint(&request(Some(UserExportFilters::default())))
        );
        let active = UserExportFilters {
            status: Some(UserStatus::Active),
            ..Default::default()
        };
        assert_ne!(
            fingerprint(&request(None)),
            fingerprint(&request(Some(active.clone())))
        );
        let xlsx = CreateUserExport {
            format: ExportFormat::Xlsx,
            ..request(None)
        };
        assert_ne!(fingerprint(&request(None)), fingerprint(&xlsx));
        // As before 1.9: SHA-256 of the pair, so keys remembered then replay after an upgrade.
        let before: [u8; 32] =
            Sha256::digest(serde_json::to_vec(&(ExportFormat::Csv, &active)).unwrap()).into();
        assert_eq!(fingerprint(&request(Some(active))), before);
        let defaults = CreateUserExport {
            columns: Some(UserColumn::ALL.to_vec()),
            compression: Some(ExportCompression::None),
            ..request(None)
        };
        assert_eq!(fingerprint(&defaults), fingerprint(&request(None)));
        let email = CreateUserExport {
            columns: Some(vec![UserColumn::Email]),
            ..request(None)
        };
        let gzip = CreateUserExport {
            compression: Some(ExportCompression::Gzip),
            ..request(None)
        };
        assert_ne!(fingerprint(&email), fingerprint(&request(None)));
        assert_ne!(fingerprint(&gzip), fingerprint(&request(None)));
        assert_ne!(fingerprint(&gzip), fingerprint(&email));
    }
}
