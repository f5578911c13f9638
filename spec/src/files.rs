//! The export files as the spec describes them (`downloadExport`): the columns the server
//! writes and the mock's fake files copy.

/// The users' columns of every file, in this order, under a header row of these names.
pub const USER_COLUMNS: [&str; 5] = ["id", "email", "name", "status", "created_at"];

#[cfg(test)]
mod tests {
    #[test]
    fn the_columns_are_the_ones_the_spec_describes() {
        let spec = crate::Spec::bundled();
        let download = spec
            .operations()
            .into_iter()
            .find(|operation| operation.id == "downloadExport")
            .expect("downloadExport");
        let description = download.definition["description"].as_str().unwrap_or_default();
        let header = format!("a header row `{}`", super::USER_COLUMNS.join(","));
        assert!(description.contains(&header), "{description}");
    }
}
