//! Orchestration tests against the real PostgreSQL, Redis, Kafka, git and bubblewrap that
//! `./dev test` starts, with the real llm service in front of a scripted OpenAI-compatible
//! model double (the only stand-in: no real model writes predictable edits).
#![allow(clippy::unwrap_used)]

mod double;
mod eval;
mod events;
mod fixtures;
mod grpcurl;
mod harness;
mod resume;
mod runs;
mod sandbox;
mod streams;
mod tasks;
