//! How the Rust types behind the contract describe themselves to schemars, where a rule of the
//! contract decides it (the server's generated document is checked against the spec).

/// Counts and durations are `u64` in Rust and `int64` (non-negative) on the wire: every one comes
/// from a PostgreSQL `bigint` or a bounded computation, and `int64` is the format clients of
/// every language read natively.
pub fn count(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    use schemars::schema::{InstanceType, NumberValidation, SchemaObject};
    SchemaObject {
        instance_type: Some(InstanceType::Integer.into()),
        format: Some("int64".into()),
        number: Some(Box::new(NumberValidation {
            minimum: Some(0.0),
            ..Default::default()
        })),
        ..Default::default()
    }
    .into()
}
