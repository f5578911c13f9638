//! The exports service: a dropshot API that records export requests in PostgreSQL and queues
//! them on a Redis stream, and the worker that turns them into CSV, XLSX or JSON Lines files in storage.
//!
//! By role: `startup` (settings and the processes), `api` (the edge, the API and its
//! handlers), `db` (one module per table), `queue` (the Redis stream), `worker` (its background
//! tasks), `export_file` (rows into CSV, JSON Lines or XLSX), `storage` (the file store). The rest is
//! shared by several: `model` (the API's types), `views` (stored rows as the API shows them),
//! `throughput` (the estimates), `metrics`, `telemetry` (traces), `tls`, and `dependencies`, what the API and the
//! workers run on, opened once.

pub mod api;
pub mod db;
pub mod dependencies;
mod export_file;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod startup;
pub mod storage;
mod telemetry;
mod throughput;
mod tls;
mod views;
pub mod worker;

#[cfg(feature = "fault-injection")]
pub use export_file::HELD as FAULT_INJECTION_HELD;
