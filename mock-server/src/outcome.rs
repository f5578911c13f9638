//! The answer of a stateful flow, in one module of its own so that the flows share it without
//! importing each other: `stateful` (the exports) uses `webhooks` to announce, and both answer
//! with an `Outcome`.

use exports_spec::errors::ErrorBody;
use serde_json::Value;

/// What the stateful flows (`stateful`'s exports, `webhooks`' endpoints) answer, for
/// `lib.rs` to turn into a response; `Canned` asks for the spec's own response with that status.
pub enum Outcome {
    Json(u16, Value),
    /// The answer of an earlier create with the same `Idempotency-Key`.
    Replayed(Value),
    /// A file, with its media type and `Content-Disposition` (`exports_spec::files`).
    File {
        media_type: &'static str,
        disposition: String,
        bytes: Vec<u8>,
    },
    Canned(u16),
    /// `204`, no body.
    NoContent,
    /// An error, in the words the server uses (`exports_spec::errors`).
    Error(u16, ErrorBody),
    /// The spec's response with that status and that named example.
    Example(u16, &'static str),
}
