//! The classifier service through its real `serve()` on port 0, against the real PostgreSQL,
//! Redis and Kafka.
#![allow(clippy::unwrap_used)]

mod classify;
mod harness;
mod models;
mod samples;
