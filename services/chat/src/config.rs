//! The chat service's configuration (`CODINGAGENT_CHAT__…`, `deploy/config/chat.example.toml`).

use codingagent_kernel::config::{
    ConfigError, DatabaseConfig, IdentityConfig, KafkaConfig, RedisConfig, ServerConfig, ServiceConfig,
    TelemetryConfig,
};
use codingagent_kernel::service::HostedConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub kafka: KafkaConfig,
    pub identity: IdentityConfig,
    /// Days a deleted conversation is kept before it is purged.
    pub retention_days: u32,
    /// How often the purge job runs.
    pub purge_interval_secs: u64,
    /// Messages kept per conversation in the Redis cache of recent history.
    pub cached_messages: usize,
    /// Lifetime of a cache entry that no write refreshed; bounds Redis memory.
    pub cache_ttl_secs: u64,
    /// Seconds a typing signal lasts unless renewed.
    pub typing_ttl_secs: u64,
    /// Seconds a stream's presence lasts without renewal (a replica that dies mid-stream
    /// leaves nobody online for longer than this).
    pub presence_ttl_secs: u64,
    /// Seconds between heartbeats on an idle stream; each also checks for missed events.
    pub heartbeat_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig {
                listen_addr: SocketAddr::from(([127, 0, 0, 1], 50_055)),
                ..ServerConfig::default()
            },
            telemetry: TelemetryConfig::default(),
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            kafka: KafkaConfig::default(),
            identity: IdentityConfig::default(),
            retention_days: 30,
            purge_interval_secs: 3_600,
            cached_messages: 100,
            cache_ttl_secs: 3_600,
            typing_ttl_secs: 5,
            presence_ttl_secs: 30,
            heartbeat_secs: 15,
        }
    }
}

impl HostedConfig for Config {
    fn server(&self) -> &ServerConfig {
        &self.server
    }

    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

impl ServiceConfig for Config {
    const ENV_NAME: &'static str = "CHAT";

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("purge_interval_secs", self.purge_interval_secs),
            ("cache_ttl_secs", self.cache_ttl_secs),
            ("typing_ttl_secs", self.typing_ttl_secs),
            ("presence_ttl_secs", self.presence_ttl_secs),
            ("heartbeat_secs", self.heartbeat_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        if self.cached_messages == 0 || self.cached_messages > 1_000 {
            return Err(ConfigError::invalid("cached_messages", "must be between 1 and 1000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codingagent_kernel::config::{ConfigArgs, load_with_env};

    fn load_file(path: &str) -> Result<Config, ConfigError> {
        let file = codingagent_testkit::repo_path(path);
        load_with_env(&ConfigArgs { file: Some(file), ..ConfigArgs::default() }, Vec::new())
    }

    #[test]
    fn the_example_and_dev_configs_parse() {
        assert_eq!(load_file("deploy/config/chat.example.toml").unwrap().retention_days, 30);
        assert_eq!(load_file("deploy/config/dev/chat.toml").unwrap().server.listen_addr.port(), 50_055);
    }

    #[test]
    fn zero_intervals_are_refused_with_the_key() {
        let config = Config { heartbeat_secs: 0, ..Config::default() };
        assert!(config.validate().unwrap_err().to_string().contains("heartbeat_secs"));
    }
}
