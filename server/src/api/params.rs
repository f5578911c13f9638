//! How the API's parameters and bodies are read, so that dropshot never refuses a request
//! with words of its own: path and query parameters as text, bodies as any JSON, each
//! documented with its real schema. The spec checks them first (`request::checked`); the page
//! token of `listExports` is dropshot's.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use exports_spec::errors::issue;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::error::{ApiError, ErrorDetail};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct EndpointPath {
    #[schemars(with = "Uuid")]
    pub endpoint_id: String,
}

impl EndpointPath {
    pub fn id(&self) -> Result<Uuid, ApiError> {
        path_id("endpoint_id", &self.endpoint_id)
    }
}

/// An id of the path, which the spec has checked (`request::checked`) before it is read.
fn path_id(field: &str, text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        let problem = ErrorDetail::new(field, issue::not_a_uuid(&Value::from(text)));
        ApiError::invalid_request(vec![problem])
    })
}

/// Position of the last export of a page: the next page starts after it (newest first).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExportPageSelector {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
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
    pub fn id(&self) -> Result<Uuid, ApiError> {
        path_id("export_id", &self.export_id)
    }
}

/// The query of a signed download link, read as text so that a mangled link gets the spec's
/// field-level 400 (`request::checked`) rather than dropshot's generic message.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct DownloadLinkQuery {
    /// When the link stops working, in seconds since the Unix epoch.
    #[schemars(with = "i64")]
    pub expires: Option<String>,
    /// The link's signature (hex).
    pub signature: Option<String>,
}

impl DownloadLinkQuery {
    /// The link's parts. The spec has checked that both are there and that `expires` is an
    /// integer; one beyond an i64 is all that is left to refuse.
    pub fn parts(&self) -> Result<(i64, &str), ApiError> {
        let expires = self.expires.as_deref().unwrap_or_default();
        let expires = expires.parse::<i64>().map_err(|_| {
            let problem =
                ErrorDetail::new("expires", issue::not_of_type("an integer", &Value::from(expires)));
            ApiError::invalid_request(vec![problem])
        })?;
        Ok((expires, self.signature.as_deref().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_export_ids_name_the_field() {
        let path = ExportPath {
            export_id: "not-a-uuid".into(),
        };
        assert_eq!(path.id().unwrap_err().error.details[0].field, "export_id");
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
