//! Every end-to-end test in one binary: one crate to compile and link instead of one for each
//! file (omicron does the same, "to speed up link times"). Each module is one area, and each
//! test makes its own database, Redis prefix, storage and server (`exports_tests::TestEnv`),
//! so they run side by side in one process as they did in many.

mod alerts;
mod anonymous;
mod cleanup;
mod client_flow;
mod client_outside;
mod contract;
mod dependencies_down;
mod edge;
mod errors;
mod exports;
mod file_options;
mod idempotency;
mod keys;
mod migrations;
mod mock_webhooks;
mod parity;
mod queue;
mod recovery;
mod resume;
mod retention;
mod secrets;
mod shutdown;
mod slow_clients;
mod tls;
mod traces;
mod webhook_deliveries;
mod webhook_endpoints;
mod worker;
