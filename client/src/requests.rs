//! Creates built without naming every field: a struct literal of the generated
//! `CreateUserExport` stops compiling each time the API adds an option, these do not.

use crate::types::{CreateUserExport, ExportCompression, ExportFormat, UserColumn, UserExportFilters};

impl CreateUserExport {
    /// An export of every user as `format`: every column, in the default order, uncompressed.
    pub fn new(format: ExportFormat) -> Self {
        Self {
            format,
            filters: None,
            columns: None,
            compression: None,
        }
    }

    /// Only the users matching `filters`.
    pub fn with_filters(mut self, filters: UserExportFilters) -> Self {
        self.filters = Some(filters);
        self
    }

    /// The file's columns, in this order.
    pub fn with_columns(mut self, columns: impl IntoIterator<Item = UserColumn>) -> Self {
        self.columns = Some(columns.into_iter().collect::<Vec<_>>().into());
        self
    }

    /// `gzip` for CSV and JSON Lines (the API refuses it for XLSX).
    pub fn with_compression(mut self, compression: ExportCompression) -> Self {
        self.compression = Some(compression);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_create_sends_only_what_was_chosen() {
        let plain = CreateUserExport::new(ExportFormat::Csv);
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            serde_json::json!({"format": "csv"})
        );
        let chosen = CreateUserExport::new(ExportFormat::Jsonl)
            .with_columns([UserColumn::CreatedAt, UserColumn::Email])
            .with_compression(ExportCompression::Gzip);
        assert_eq!(
            serde_json::to_value(&chosen).unwrap(),
            serde_json::json!({"format": "jsonl", "columns": ["created_at", "email"], "compression": "gzip"})
        );
    }
}
