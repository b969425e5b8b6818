//! The chat service through its real `serve()` on port 0, against the real PostgreSQL,
//! Redis and Kafka.
#![allow(clippy::unwrap_used)]

mod attachments;
mod conversations;
mod events;
mod grpcurl;
mod harness;
mod messages;
mod outage;
mod search;
mod streams;
