//! Test support shared by CodingAgent's crates. Tests run against the real PostgreSQL, Redis
//! and Kafka that `./dev up` (or `./dev test`) starts; this crate knows where they listen,
//! gives every test its own database and Kafka topics so tests never see each other's data,
//! builds the configuration sections every service under test shares, connects as a given
//! caller, and provides a probe gRPC service for exercising the server skeleton.

mod client;
mod config;
mod infra;
mod kafka;
mod probe;

pub use client::{connect, connect_as, metrics, wait_until_serving};
pub use config::{Sections, load_config, sections};
pub use infra::{TOPIC_PREFIX, TestDatabase, dev, kafka_bootstrap, redis_url, repo_path, topic, unique_name};
pub use kafka::{Record, delete_topic, find_record, publish_event, read_topic};
pub use probe::pb;
