//! Kernel tests against the real PostgreSQL, Redis and Kafka started by `./dev`.

mod harness;
mod identity;
mod kafka;
mod server;
