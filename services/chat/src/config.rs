//! The chat service's configuration (`CODINGAGENT_CHAT__…`, `deploy/config/chat.example.toml`).

use codingagent_kernel::config::{ConfigError, Secret};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

codingagent_kernel::service_config! {
    /// The chat service's settings.
    pub struct Config("CHAT", port 50_055) {
        /// Days a deleted conversation is kept before it is purged.
        pub retention_days: u32 = 30,
        /// How often the purge job runs.
        pub purge_interval_secs: u64 = 3_600,
        /// Messages kept per conversation in the Redis cache of recent history.
        pub cached_messages: usize = 100,
        /// Lifetime of a cache entry that no write refreshed; bounds Redis memory.
        pub cache_ttl_secs: u64 = 3_600,
        /// Seconds a typing signal lasts unless renewed.
        pub typing_ttl_secs: u64 = 5,
        /// Seconds a stream's presence lasts without renewal (a replica that dies mid-stream
        /// leaves nobody online for longer than this).
        pub presence_ttl_secs: u64 = 30,
        /// Seconds between heartbeats on an idle stream; each also checks for missed events.
        pub heartbeat_secs: u64 = 15,
        pub attachments: AttachmentsConfig = AttachmentsConfig::default(),
    }
}

/// Where attachment bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A directory on this machine (`local_dir`).
    Local,
    /// An S3-compatible bucket (`[attachments.s3]`).
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttachmentsConfig {
    pub store: StoreKind,
    /// For `local`: created if missing.
    pub local_dir: PathBuf,
    pub s3: S3Config,
    /// Largest accepted upload, in bytes.
    pub max_bytes: u64,
    /// Uploads never posted with a message are removed after this many hours.
    pub unattached_ttl_hours: u32,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Local,
            local_dir: PathBuf::from("var/chat-attachments"),
            s3: S3Config::default(),
            max_bytes: 26_214_400,
            unattached_ttl_hours: 24,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// For S3-compatible services (MinIO, Ceph, R2); empty means AWS.
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Allow a plain-HTTP endpoint (a local MinIO).
    pub allow_http: bool,
}

impl Config {
    /// The chat service's own rules; the kernel checks the shared sections.
    fn check(&self) -> Result<(), ConfigError> {
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
        if self.attachments.max_bytes == 0 {
            return Err(ConfigError::invalid("attachments.max_bytes", "must be greater than zero"));
        }
        if self.attachments.store == StoreKind::S3 && self.attachments.s3.bucket.is_empty() {
            return Err(ConfigError::invalid(
                "attachments.s3.bucket",
                "is required when attachments.store = \"s3\"",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codingagent_kernel::config::ServiceConfig;
    use codingagent_testkit::load_config;

    #[test]
    fn the_example_and_dev_configs_parse() {
        let example = load_config::<Config>("deploy/config/chat.example.toml").unwrap();
        assert_eq!((example.retention_days, example.attachments.store), (30, StoreKind::Local));
        assert_eq!(example.attachments.s3.bucket, "codingagent-attachments");
        assert_eq!(
            load_config::<Config>("deploy/config/dev/chat.toml").unwrap().server.listen_addr.port(),
            50_055
        );
    }

    #[test]
    fn zero_intervals_are_refused_with_the_key() {
        let config = Config { heartbeat_secs: 0, ..Config::default() };
        assert!(config.validate().unwrap_err().to_string().contains("heartbeat_secs"));
        let mut config = Config::default();
        config.attachments.store = StoreKind::S3;
        assert!(config.validate().unwrap_err().to_string().contains("attachments.s3.bucket"));
    }
}
