//! The exports service: a dropshot API that records export requests in PostgreSQL and queues
//! them on a Redis stream, and the worker that turns them into CSV or XLSX files in storage.

pub mod after_auth;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod edge;
pub mod error;
pub mod export_file;
pub mod idempotency;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod storage;
pub mod throughput;
pub mod tls;
pub mod webhook_delivery;
pub mod worker;
