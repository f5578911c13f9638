//! The API's resource types, the validation of what clients send, and the SQL filter a
//! users export runs with.

use std::marker::PhantomData;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::ErrorDetail;
use exports_spec::errors::issue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Xlsx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Inactive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportStatus {
    Pending,
    Processing,
    Done,
    Failed,
    Cancelled,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportType {
    Users,
}

/// Names as stored in PostgreSQL and sent on the wire (the serde names).
macro_rules! wire_names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }

            pub fn parse(name: &str) -> Option<Self> {
                match name { $($name => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

wire_names!(ExportFormat { Csv => "csv", Xlsx => "xlsx" });
wire_names!(UserStatus { Active => "active", Inactive => "inactive" });
wire_names!(ExportStatus {
    Pending => "pending",
    Processing => "processing",
    Done => "done",
    Failed => "failed",
    Cancelled => "cancelled",
    Expired => "expired",
});

/// What a webhook delivery announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WebhookEventType {
    #[serde(rename = "export.done")]
    ExportDone,
    #[serde(rename = "export.failed")]
    ExportFailed,
    #[serde(rename = "export.cancelled")]
    ExportCancelled,
    #[serde(rename = "export.expired")]
    ExportExpired,
}

wire_names!(WebhookEventType {
    ExportDone => "export.done",
    ExportFailed => "export.failed",
    ExportCancelled => "export.cancelled",
    ExportExpired => "export.expired",
});

impl WebhookEventType {
    pub const ALL: [WebhookEventType; 4] = [
        WebhookEventType::ExportDone,
        WebhookEventType::ExportFailed,
        WebhookEventType::ExportCancelled,
        WebhookEventType::ExportExpired,
    ];
}

/// The body of `createWebhookEndpoint` (checked against the spec's schema first).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpoint {
    /// Where deliveries are POSTed; `https`, resolving only to public addresses.
    #[schemars(schema_with = "webhook_url")]
    pub url: String,
    /// The events to deliver; all of them when left out.
    #[serde(default)]
    #[schemars(schema_with = "event_types_asked")]
    pub event_types: Option<Vec<WebhookEventType>>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WebhookEndpoint {
    pub endpoint_id: Uuid,
    #[schemars(schema_with = "uri")]
    pub url: String,
    /// The events delivered to it.
    pub event_types: Vec<WebhookEventType>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WebhookEndpointWithSecret {
    pub endpoint_id: Uuid,
    #[schemars(schema_with = "uri")]
    pub url: String,
    /// The events delivered to it.
    pub event_types: Vec<WebhookEventType>,
    pub created_at: DateTime<Utc>,
    /// The signing secret (`whsec_` and base64), shown only when it is made.
    #[schemars(schema_with = "webhook_secret")]
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WebhookEndpointList {
    pub items: Vec<WebhookEndpoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookDeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

/// One event sent to an endpoint, and its last attempt.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WebhookDelivery {
    /// The `webhook-id` of every attempt of this event.
    pub delivery_id: Uuid,
    pub event_type: WebhookEventType,
    pub occurred_at: DateTime<Utc>,
    pub status: WebhookDeliveryStatus,
    #[schemars(schema_with = "count")]
    pub attempts: u64,
    pub last_attempt_at: Option<DateTime<Utc>>,
    #[schemars(schema_with = "nullable_count")]
    pub last_response_status: Option<u64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WebhookDeliveryList {
    pub items: Vec<WebhookDelivery>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct EndpointPath {
    #[schemars(with = "Uuid")]
    pub endpoint_id: String,
}

impl EndpointPath {
    pub fn id(&self) -> Result<Uuid, ErrorDetail> {
        Uuid::parse_str(&self.endpoint_id).map_err(|_| {
            ErrorDetail::new(
                "endpoint_id",
                issue::not_a_uuid(&Value::from(self.endpoint_id.as_str())),
            )
        })
    }
}

fn uri(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    use schemars::schema::{InstanceType, SchemaObject};
    SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        format: Some("uri".into()),
        ..Default::default()
    }
    .into()
}

fn webhook_url(generator: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    let mut schema = uri(generator).into_object();
    schema.string().max_length = Some(2048);
    schema.into()
}

fn event_types_asked(generator: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    let mut schema = generator.subschema_for::<Vec<WebhookEventType>>().into_object();
    schema.array().min_items = Some(1);
    schema.into()
}

fn webhook_secret(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    use schemars::schema::{InstanceType, SchemaObject};
    let mut schema = SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        ..Default::default()
    };
    schema.string().pattern = Some("^whsec_[A-Za-z0-9+/]+=*$".into());
    schema.into()
}

impl ExportFormat {
    pub fn file_extension(self) -> &'static str {
        self.as_str()
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }

    /// `attachment` with the file name the spec promises: `users-<export_id>.<format>`.
    pub fn content_disposition(self, export_id: Uuid) -> String {
        format!(
            "attachment; filename=\"users-{export_id}.{}\"",
            self.file_extension()
        )
    }
}

impl ExportStatus {
    /// Pending and processing exports count against the per-user limit and can be cancelled.
    pub const ACTIVE: [ExportStatus; 2] = [ExportStatus::Pending, ExportStatus::Processing];

    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }
}

/// Which users an export contains. Absent filters mean all users.
///
/// Absent fields are left out rather than sent as null, so the schema says "optional", not
/// "nullable" (`schemars(with)`): the OpenAPI document must not promise nulls we never send.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserExportFilters {
    /// Only users created on or after this day (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "NaiveDate")]
    pub created_after: Option<NaiveDate>,
    /// Only users with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "UserStatus")]
    pub status: Option<UserStatus>,
}

/// The body of `createUserExport`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserExport {
    pub format: ExportFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "UserExportFilters")]
    pub filters: Option<UserExportFilters>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExportAccepted {
    pub export_id: Uuid,
    pub status: ExportStatus,
    /// Derived from the number of matching rows and the measured worker throughput.
    #[schemars(schema_with = "count")]
    pub estimated_seconds: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExportProgress {
    #[schemars(schema_with = "count")]
    pub rows_written: u64,
    #[schemars(schema_with = "count")]
    pub rows_total: u64,
    #[schemars(range(min = 0, max = 100))]
    pub percent: f64,
    /// Null unless the export is pending or processing.
    #[schemars(schema_with = "nullable_count")]
    pub estimated_seconds_remaining: Option<u64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Export {
    pub export_id: Uuid,
    #[serde(rename = "type")]
    pub export_type: ExportType,
    pub format: ExportFormat,
    pub status: ExportStatus,
    pub filters: UserExportFilters,
    pub progress: ExportProgress,
    #[schemars(schema_with = "nullable_uri")]
    pub download_url: Option<String>,
    pub download_expires_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    #[schemars(schema_with = "nullable_count")]
    pub file_size_bytes: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

pub use exports_spec::schema::count;

pub fn nullable_count(generator: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    nullable(count(generator))
}

fn nullable_uri(generator: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    nullable(uri(generator))
}

/// OpenAPI 3.0's `nullable: true`, the way dropshot's schema settings express it.
fn nullable(schema: schemars::schema::Schema) -> schemars::schema::Schema {
    let mut object = schema.into_object();
    object
        .extensions
        .insert("nullable".into(), serde_json::Value::Bool(true));
    object.into()
}

/// Position of the last export of a page: the next page starts after it (newest first).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExportPageSelector {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Health {
    pub status: HealthStatus,
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Readiness {
    pub status: HealthStatus,
    pub checks: ReadinessChecks,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ReadinessChecks {
    pub postgres: HealthStatus,
    pub redis: HealthStatus,
}

/// A request body accepted as any JSON and documented with the schema of `T`: serde would stop
/// at the first problem with a message about line and column, while clients need every
/// problem, field by field, with the allowed values.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Lenient<T> {
    pub value: Value,
    #[serde(skip)]
    _schema: PhantomData<fn() -> T>,
}

impl<T: JsonSchema> JsonSchema for Lenient<T> {
    fn schema_name() -> String {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        T::json_schema(generator)
    }

    fn is_referenceable() -> bool {
        T::is_referenceable()
    }
}

/// A path parameter accepted as any string and documented as a UUID, so a malformed id gets a
/// field-level 400 rather than dropshot's generic message.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExportPath {
    #[schemars(with = "Uuid")]
    pub export_id: String,
}

impl ExportPath {
    pub fn id(&self) -> Result<Uuid, ErrorDetail> {
        Uuid::parse_str(&self.export_id).map_err(|_| {
            ErrorDetail::new(
                "export_id",
                issue::not_a_uuid(&Value::from(self.export_id.as_str())),
            )
        })
    }
}

/// The query of a signed download link. Both fields are read as text and checked by hand, so
/// a mangled link gets a field-level 400 rather than dropshot's generic message.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct DownloadLinkQuery {
    /// When the link stops working, in seconds since the Unix epoch.
    #[schemars(with = "i64")]
    pub expires: Option<String>,
    /// The link's signature (hex).
    pub signature: Option<String>,
}

impl DownloadLinkQuery {
    pub fn parts(&self) -> Result<(i64, &str), Vec<ErrorDetail>> {
        let expires = self.expires.as_deref().and_then(|text| text.parse::<i64>().ok());
        let mut problems = Vec::new();
        match self.expires.as_deref() {
            None => problems.push(ErrorDetail::new("expires", issue::REQUIRED)),
            Some(text) if expires.is_none() => problems.push(ErrorDetail::new(
                "expires",
                issue::not_of_type("an integer", &Value::from(text)),
            )),
            Some(_) => {}
        }
        if self.signature.is_none() {
            problems.push(ErrorDetail::new("signature", issue::REQUIRED));
        }
        match (expires, self.signature.as_deref()) {
            (Some(expires), Some(signature)) => Ok((expires, signature)),
            _ => Err(problems),
        }
    }
}

/// Checks a `createUserExport` body and reports every problem at once.
pub fn validate_create_export(body: &Value) -> Result<CreateUserExport, Vec<ErrorDetail>> {
    let Some(object) = body.as_object() else {
        return Err(vec![ErrorDetail::new(
            "body",
            issue::not_of_type("an object", body),
        )]);
    };
    let mut problems = unknown_fields(object, "", &["format", "filters"]);

    let format = match object.get("format") {
        None | Some(Value::Null) => {
            problems.push(ErrorDetail::new("format", issue::REQUIRED).with_allowed(ExportFormat::NAMES));
            None
        }
        Some(value) => enum_value(
            value,
            "format",
            ExportFormat::NAMES,
            ExportFormat::parse,
            &mut problems,
        ),
    };

    let filters = match object.get("filters") {
        None | Some(Value::Null) => None,
        Some(Value::Object(filters)) => {
            problems.extend(unknown_fields(filters, "filters.", &["created_after", "status"]));
            let created_after = match filters.get("created_after") {
                None | Some(Value::Null) => None,
                Some(value) => parse_date(value, "filters.created_after", &mut problems),
            };
            let status = match filters.get("status") {
                None | Some(Value::Null) => None,
                Some(value) => enum_value(
                    value,
                    "filters.status",
                    UserStatus::NAMES,
                    UserStatus::parse,
                    &mut problems,
                ),
            };
            Some(UserExportFilters {
                created_after,
                status,
            })
        }
        Some(other) => {
            problems.push(ErrorDetail::new(
                "filters",
                issue::not_of_type("an object", other),
            ));
            None
        }
    };

    match format {
        Some(format) if problems.is_empty() => Ok(CreateUserExport { format, filters }),
        _ => Err(problems),
    }
}

fn unknown_fields(object: &Map<String, Value>, prefix: &str, known: &[&str]) -> Vec<ErrorDetail> {
    object
        .keys()
        .filter(|key| !known.contains(&key.as_str()))
        .map(|key| ErrorDetail::new(format!("{prefix}{key}"), issue::UNKNOWN_FIELD).with_allowed(known))
        .collect()
}

fn enum_value<T>(
    value: &Value,
    field: &str,
    names: &[&str],
    parse: fn(&str) -> Option<T>,
    problems: &mut Vec<ErrorDetail>,
) -> Option<T> {
    let parsed = value.as_str().and_then(parse);
    if parsed.is_none() {
        problems.push(ErrorDetail::new(field, issue::not_one_of(names, value)).with_allowed(names));
    }
    parsed
}

fn parse_date(value: &Value, field: &str, problems: &mut Vec<ErrorDetail>) -> Option<NaiveDate> {
    // RFC 3339 full-date only: exactly YYYY-MM-DD, a real calendar day.
    let parsed = value
        .as_str()
        .filter(|text| text.len() == 10)
        .and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok());
    if parsed.is_none() {
        problems.push(ErrorDetail::new(field, issue::not_a_date(value)));
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_event_types_are_those_the_mock_announces() {
        assert_eq!(WebhookEventType::NAMES, exports_spec::webhooks::EVENT_TYPES);
    }

    fn fields(problems: &[ErrorDetail]) -> Vec<&str> {
        problems.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn accepts_a_full_request() {
        let request = validate_create_export(
            &json!({"format": "xlsx", "filters": {"created_after": "2024-02-29", "status": "inactive"}}),
        )
        .unwrap();
        assert_eq!(request.format, ExportFormat::Xlsx);
        let filters = request.filters.unwrap();
        assert_eq!(filters.created_after, NaiveDate::from_ymd_opt(2024, 2, 29));
        assert_eq!(filters.status, Some(UserStatus::Inactive));
    }

    #[test]
    fn accepts_format_alone() {
        let request = validate_create_export(&json!({"format": "csv"})).unwrap();
        assert_eq!(
            request,
            CreateUserExport {
                format: ExportFormat::Csv,
                filters: None
            }
        );
    }

    #[test]
    fn reports_every_problem_with_allowed_values() {
        let problems = validate_create_export(&json!({
            "format": "pdf",
            "filters": {"created_after": "2024-02-30", "status": "banned", "age": 3},
            "extra": true
        }))
        .unwrap_err();
        let mut got = fields(&problems);
        got.sort();
        assert_eq!(
            got,
            [
                "extra",
                "filters.age",
                "filters.created_after",
                "filters.status",
                "format"
            ]
        );
        let format = problems.iter().find(|p| p.field == "format").unwrap();
        assert_eq!(
            format.allowed.as_deref(),
            Some(&["csv".to_string(), "xlsx".to_string()][..])
        );
        let status = problems.iter().find(|p| p.field == "filters.status").unwrap();
        assert_eq!(status.allowed.as_ref().unwrap(), &["active", "inactive"]);
    }

    #[test]
    fn rejects_wrong_types_and_shapes() {
        assert_eq!(
            fields(&validate_create_export(&json!([1])).unwrap_err()),
            ["body"]
        );
        assert_eq!(
            fields(&validate_create_export(&json!({})).unwrap_err()),
            ["format"]
        );
        assert_eq!(
            fields(&validate_create_export(&json!({"format": 7})).unwrap_err()),
            ["format"]
        );
        assert_eq!(
            fields(&validate_create_export(&json!({"format": "CSV"})).unwrap_err()),
            ["format"]
        );
        assert_eq!(
            fields(&validate_create_export(&json!({"format": "csv", "filters": "active"})).unwrap_err()),
            ["filters"]
        );
        for not_a_date in [
            json!("2024-1-5"),
            json!("2024-01-05T00:00:00Z"),
            json!(20240105),
            json!("yesterday"),
        ] {
            let problems =
                validate_create_export(&json!({"format": "csv", "filters": {"created_after": not_a_date}}))
                    .unwrap_err();
            assert_eq!(fields(&problems), ["filters.created_after"]);
        }
    }

    #[test]
    fn invalid_export_ids_name_the_field() {
        let path = ExportPath {
            export_id: "not-a-uuid".into(),
        };
        assert_eq!(path.id().unwrap_err().field, "export_id");
        let id = Uuid::new_v4();
        assert_eq!(
            ExportPath {
                export_id: id.to_string()
            }
            .id()
            .unwrap(),
            id
        );
    }
}
