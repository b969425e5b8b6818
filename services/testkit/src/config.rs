//! Configuration for services under test: the sections they share, and the shipped files.

use crate::TestDatabase;
use codingagent_kernel::config::{DatabaseConfig, KafkaConfig, RedisConfig, Secret, ServerConfig};

/// Where a service under test listens and what it talks to.
#[derive(Debug, Clone)]
pub struct Sections {
    /// Port 0 (the test asks the listener for its port) and a short shutdown grace.
    pub server: ServerConfig,
    /// The test's own database.
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    /// The local broker, under [`crate::TOPIC_PREFIX`], relaying every 100 ms so events
    /// reach consumers without a notification's help.
    pub kafka: KafkaConfig,
}

/// The shared sections for a service whose data lives in `database`.
pub fn sections(database: &TestDatabase) -> Sections {
    Sections {
        server: ServerConfig {
            listen_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            shutdown_grace_secs: 2,
            ..ServerConfig::default()
        },
        database: DatabaseConfig { url: Secret::new(database.url.clone()), ..DatabaseConfig::default() },
        redis: RedisConfig { url: Secret::new(crate::redis_url()) },
        kafka: KafkaConfig {
            bootstrap_servers: crate::kafka_bootstrap(),
            topic_prefix: crate::TOPIC_PREFIX.into(),
            relay_poll_ms: 100,
            ..KafkaConfig::default()
        },
    }
}

/// A configuration file of the repository (`deploy/config/…`) over the defaults, without the
/// environment's layers, for tests that keep the shipped files loadable.
pub fn load_config<T: codingagent_kernel::config::ServiceConfig>(
    relative: &str,
) -> Result<T, codingagent_kernel::config::ConfigError> {
    use codingagent_kernel::config::{ConfigArgs, load_with_env};
    let args = ConfigArgs { file: Some(crate::repo_path(relative)), ..ConfigArgs::default() };
    load_with_env(&args, Vec::new())
}
