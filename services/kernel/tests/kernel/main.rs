//! Kernel tests against the real PostgreSQL, Redis and Kafka started by `./dev`.
// Helpers unwrap too: a panic there is the failure report.
#![allow(clippy::unwrap_used)]

mod dead_letters;
mod harness;
mod idempotency;
mod identity;
mod kafka;
mod limits;
mod reflection;
mod server;
mod telemetry;
