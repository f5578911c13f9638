//! The API's resources (the spec's schemas, as dropshot documents them) and the names they
//! have on the wire and in PostgreSQL. Shared by the API, the tables and the worker.

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Xlsx,
    Jsonl,
}

/// A column of the users table that a file can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserColumn {
    Id,
    Email,
    Name,
    Status,
    CreatedAt,
}

impl UserColumn {
    /// Every column, in the order of a file that has them all (the default).
    pub const ALL: [UserColumn; 5] = [
        UserColumn::Id,
        UserColumn::Email,
        UserColumn::Name,
        UserColumn::Status,
        UserColumn::CreatedAt,
    ];
}

/// How a file is compressed as it is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportCompression {
    #[default]
    None,
    Gzip,
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

wire_names!(ExportFormat { Csv => "csv", Xlsx => "xlsx", Jsonl => "jsonl" });
wire_names!(UserColumn {
    Id => "id",
    Email => "email",
    Name => "name",
    Status => "status",
    CreatedAt => "created_at",
});
wire_names!(ExportCompression { None => "none", Gzip => "gzip" });
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

/// What an export's file is: its format, its columns in order, and its compression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    pub format: ExportFormat,
    pub columns: Vec<UserColumn>,
    pub compression: ExportCompression,
}

impl ExportFile {
    /// The file a create asks for: every column and no compression unless it says otherwise.
    pub fn asked(request: &CreateUserExport) -> Self {
        Self {
            format: request.format,
            columns: request
                .columns
                .clone()
                .unwrap_or_else(|| UserColumn::ALL.to_vec()),
            compression: request.compression.unwrap_or_default(),
        }
    }

    /// The columns as stored: `None` for all of them in the default order.
    pub fn stored_columns(&self) -> Option<Vec<&'static str>> {
        (self.columns != UserColumn::ALL).then(|| self.columns.iter().map(|c| c.as_str()).collect())
    }

    /// The columns as a row of the table stores them (`NULL`: all of them).
    pub fn columns_from_stored(stored: Option<Vec<String>>) -> Option<Vec<UserColumn>> {
        match stored {
            None => Some(UserColumn::ALL.to_vec()),
            Some(names) => names.iter().map(|name| UserColumn::parse(name)).collect(),
        }
    }

    /// `csv`, `jsonl.gz`: how the file's name ends.
    pub fn file_extension(&self) -> String {
        exports_spec::files::file_extension(self.format.as_str(), self.compression.as_str())
    }

    pub fn content_type(&self) -> &'static str {
        exports_spec::files::media_type(self.format.as_str(), self.compression.as_str())
    }

    /// `attachment` with the file name the spec promises: `users-<export_id>.<format>[.gz]`.
    pub fn content_disposition(&self, export_id: Uuid) -> String {
        exports_spec::files::content_disposition(export_id, self.format.as_str(), self.compression.as_str())
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
    /// The file's columns, in order, each once; all of them when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "export_columns")]
    pub columns: Option<Vec<UserColumn>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ExportCompression")]
    pub compression: Option<ExportCompression>,
}

fn export_columns(generator: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    let mut schema = generator.subschema_for::<Vec<UserColumn>>().into_object();
    schema.array().min_items = Some(1);
    schema.array().unique_items = Some(true);
    schema.into()
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
    pub columns: Vec<UserColumn>,
    pub compression: ExportCompression,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_options_are_the_specs() {
        use exports_spec::files;
        assert_eq!(UserColumn::NAMES, files::USER_COLUMNS);
        assert_eq!(ExportFormat::NAMES, files::FORMATS);
        assert_eq!(ExportCompression::NAMES, files::COMPRESSIONS);
    }

    #[test]
    fn the_event_types_are_those_the_mock_announces() {
        assert_eq!(WebhookEventType::NAMES, exports_spec::webhooks::EVENT_TYPES);
    }
}
