//! The exports service: a dropshot API that records export requests in PostgreSQL and queues
//! them on a Redis stream.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod edge;
pub mod error;
pub mod logging;
pub mod model;
pub mod queue;
pub mod store;
pub mod throughput;
pub mod users;
