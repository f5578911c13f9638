//! The export files as the spec describes them (`createUserExport`, `downloadExport`): their
//! columns, formats and compression, their names and media types, and what makes two creates
//! the same request. The server writes and serves its files by these; the mock's fake files
//! follow them.

use serde_json::{json, Value};

/// The users' columns an export can write, in the order of a file that has them all (the
/// default), under a header row of these names.
pub const USER_COLUMNS: [&str; 5] = ["id", "email", "name", "status", "created_at"];
/// `ExportFormat`'s values.
pub const FORMATS: [&str; 3] = ["csv", "xlsx", "jsonl"];
/// `ExportCompression`'s values; `none` when a create leaves it out.
pub const COMPRESSIONS: [&str; 2] = ["none", "gzip"];
pub const NO_COMPRESSION: &str = "none";
pub const GZIP: &str = "gzip";

/// The media type a file is served with (`downloadExport`'s table). A gzip file is served as
/// the `.gz` file it is, never with `Content-Encoding`: every client then gets the same bytes,
/// and a browser saves what the person asked for.
pub fn media_type(format: &str, compression: &str) -> &'static str {
    match (format, compression) {
        (_, GZIP) => "application/gzip",
        ("xlsx", _) => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ("jsonl", _) => "application/x-ndjson",
        _ => "text/csv; charset=utf-8",
    }
}

/// `csv`, `jsonl.gz`: how the file's name ends.
pub fn file_extension(format: &str, compression: &str) -> String {
    match compression {
        GZIP => format!("{format}.gz"),
        _ => format.to_string(),
    }
}

/// `attachment` with the file name the spec promises: `users-<export_id>.<format>[.gz]`.
pub fn content_disposition(export_id: impl std::fmt::Display, format: &str, compression: &str) -> String {
    format!(
        "attachment; filename=\"users-{export_id}.{}\"",
        file_extension(format, compression)
    )
}

/// What makes two creates the same request ("Retrying a create safely"): the format and the
/// filters, `{}` for none; the columns unless all in the default order, and the compression
/// unless `none`. A create without the options added in 1.9 is the pair it always was, so its
/// fingerprint is the one recorded before them. `body` is a create the spec found valid.
pub fn create_identity(body: &Value) -> Value {
    let filters = body
        .get("filters")
        .filter(|filters| !filters.is_null())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut identity = vec![body.get("format").cloned().unwrap_or(Value::Null), filters];
    let columns = body
        .get("columns")
        .filter(|columns| **columns != json!(USER_COLUMNS));
    let compression = body
        .get("compression")
        .filter(|compression| compression.as_str() != Some(NO_COMPRESSION));
    if columns.is_some() || compression.is_some() {
        identity.push(columns.cloned().unwrap_or(Value::Null));
        identity.push(compression.cloned().unwrap_or(Value::Null));
    }
    Value::Array(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_enum(name: &str) -> Vec<String> {
        let spec = crate::Spec::bundled();
        let values = spec
            .document()
            .pointer(&format!("/components/schemas/{name}/enum"))
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{name} has an enum"));
        values.iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn the_columns_formats_and_compressions_are_the_specs() {
        assert_eq!(schema_enum("UserColumn"), USER_COLUMNS);
        assert_eq!(schema_enum("ExportFormat"), FORMATS);
        assert_eq!(schema_enum("ExportCompression"), COMPRESSIONS);
        let spec = crate::Spec::bundled();
        let download = spec
            .operations()
            .into_iter()
            .find(|operation| operation.id == "downloadExport")
            .expect("downloadExport");
        let description = download.definition["description"].as_str().unwrap_or_default();
        let header = format!("a header row\n`{}`", USER_COLUMNS.join(","));
        assert!(description.contains(&header), "{description}");
        // Every media type the table names is one the operation's answer declares.
        let content = download.definition["responses"]["200"]["content"]
            .as_object()
            .unwrap();
        for format in FORMATS {
            for compression in COMPRESSIONS {
                let media_type = crate::media_type(media_type(format, compression));
                assert!(content.contains_key(&media_type), "{media_type}");
                let row = format!("`{media_type}`");
                assert!(description.contains(&row), "{row} in the table");
            }
        }
    }

    #[test]
    fn a_create_without_the_new_options_is_the_pair_it_was() {
        let plain = json!({"format": "csv", "filters": {"status": "active"}});
        assert_eq!(create_identity(&plain), json!(["csv", {"status": "active"}]));
        let defaults = json!({"format": "csv", "filters": {"status": "active"},
                              "columns": USER_COLUMNS, "compression": "none"});
        assert_eq!(create_identity(&defaults), create_identity(&plain));
        let chosen = json!({"format": "csv", "columns": ["email"]});
        assert_eq!(create_identity(&chosen), json!(["csv", {}, ["email"], null]));
        let reordered = json!({"format": "csv", "columns": ["email", "id", "name", "status", "created_at"]});
        assert_ne!(create_identity(&reordered), create_identity(&plain));
    }
}
