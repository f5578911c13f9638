//! The HTTP API: the edge every connection meets first (its own limits, CORS, the request
//! id, the envelope of its own answers), then dropshot with the API trait (`contract`), its
//! implementation (`handlers`) and what each request goes through (`request`).

mod after_auth;
mod auth;
mod contract;
mod downloads;
mod edge;
mod error;
mod handlers;
mod idempotency;
mod params;
mod readiness;
mod request;
mod server;
mod settings;
mod state;

pub use contract::openapi_document;
pub use server::RunningApi;
pub use settings::ApiSettings;
