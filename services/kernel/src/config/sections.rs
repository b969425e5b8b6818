//! Configuration sections shared by every service. A service's `Config` embeds the ones it
//! uses, so the same keys mean the same thing everywhere.

use super::{ConfigError, Secret};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

pub use super::common::DEV_SIGNING_KEY;
use super::common::{MAX_LEEWAY_SECS, MIN_KEY_BYTES};

/// Where the process runs; production forbids development conveniences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

/// The gRPC server every service runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// Largest accepted or sent message; larger requests get `RESOURCE_EXHAUSTED`.
    pub max_message_bytes: usize,
    /// Requests handled at once across all connections; more wait their turn.
    pub concurrency_limit: usize,
    /// HTTP/2 keepalive ping interval and the time to wait for its answer.
    pub keepalive_interval_secs: u64,
    pub keepalive_timeout_secs: u64,
    /// How long in-flight calls may take to finish after shutdown starts.
    pub shutdown_grace_secs: u64,
    /// Time between reporting `NOT_SERVING` and closing the listener, so load balancers
    /// stop routing here before connections are refused (a few seconds on Kubernetes).
    pub shutdown_drain_delay_ms: u64,
    /// How often dependencies are checked for the health status.
    pub readiness_interval_ms: u64,
    /// HTTP/2 streams (calls) one connection may have open at once.
    pub max_streams_per_connection: u32,
    /// Server streams (logs, chat, watches) one caller may have open at once on this
    /// server; more are refused with `RESOURCE_EXHAUSTED` until one closes.
    pub max_streams_per_caller: usize,
    /// Time a request body has to arrive in full after its head; a slower client is cut off
    /// with `DEADLINE_EXCEEDED` so it cannot hold a handler (slow-loris).
    pub request_body_timeout_ms: u64,
    /// Serve TLS (`[server.tls]`); unset serves plaintext (behind a mesh or a TLS-terminating
    /// proxy, or on a developer's machine).
    pub tls: Option<ServerTlsConfig>,
}

/// The server's certificate, and optionally the CA its clients' certificates must chain to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// PEM private key of the leaf certificate.
    pub key_file: std::path::PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_message_bytes: 4 * 1024 * 1024,
            concurrency_limit: 1024,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
            shutdown_grace_secs: 20,
            shutdown_drain_delay_ms: 0,
            readiness_interval_ms: 2_000,
            max_streams_per_connection: 200,
            max_streams_per_caller: 32,
            request_body_timeout_ms: 10_000,
            tls: None,
        }
    }
}

impl ServerConfig {
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        positive(prefix, "max_message_bytes", self.max_message_bytes as u64)?;
        positive(prefix, "concurrency_limit", self.concurrency_limit as u64)?;
        positive(prefix, "keepalive_interval_secs", self.keepalive_interval_secs)?;
        positive(prefix, "keepalive_timeout_secs", self.keepalive_timeout_secs)?;
        positive(prefix, "readiness_interval_ms", self.readiness_interval_ms)?;
        positive(prefix, "max_streams_per_connection", u64::from(self.max_streams_per_connection))?;
        positive(prefix, "max_streams_per_caller", self.max_streams_per_caller as u64)?;
        positive(prefix, "request_body_timeout_ms", self.request_body_timeout_ms)?;
        if let Some(tls) = &self.tls {
            let files = [("cert_file", Some(&tls.cert_file)), ("key_file", Some(&tls.key_file))];
            for (key, file) in files.into_iter().chain([("client_ca_file", tls.client_ca_file.as_ref())]) {
                if let Some(file) = file
                    && !file.is_file()
                {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.tls.{key}"),
                        format!("{} is not a readable file", file.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable, for terminals.
    #[default]
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs, traces and metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// `tracing` filter directives, e.g. `info,codingagent_kernel=debug`; `RUST_LOG` wins.
    pub log_filter: String,
    /// OTLP/gRPC collector endpoint (e.g. `http://127.0.0.1:4317`); traces are exported only
    /// when set.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { log_format: LogFormat::Pretty, log_filter: "info".into(), otlp_endpoint: None }
    }
}

/// PostgreSQL. Each service owns one schema of the shared database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
    /// How long the kernel's own tables keep their rows (`[database.retention]`).
    pub retention: RetentionConfig,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://codingagent:codingagent@127.0.0.1:55432/codingagent"),
            max_connections: 10,
            acquire_timeout_secs: 5,
            retention: RetentionConfig::default(),
        }
    }
}

/// Windows of the kernel's retention job (see `retention`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Published outbox rows, kept for inspection.
    pub outbox_hours: u64,
    /// Processed event ids; must outlast the topics' retention, or a late redelivery is
    /// applied again.
    pub inbox_hours: u64,
    /// Responses replayed to retried mutations.
    pub idempotency_hours: u64,
    /// Dead letters after they were replayed (unreplayed ones are kept).
    pub dead_letter_hours: u64,
    /// How often the job runs.
    pub interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            outbox_hours: 72,
            inbox_hours: 14 * 24,
            idempotency_hours: 24,
            dead_letter_hours: 30 * 24,
            interval_secs: 3_600,
        }
    }
}

impl DatabaseConfig {
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !self.url.expose().starts_with("postgres://") && !self.url.expose().starts_with("postgresql://") {
            return Err(ConfigError::invalid(format!("{prefix}.url"), "must be a postgres:// URL"));
        }
        positive(prefix, "max_connections", u64::from(self.max_connections))?;
        let retention = format!("{prefix}.retention");
        positive(&retention, "outbox_hours", self.retention.outbox_hours)?;
        positive(&retention, "inbox_hours", self.retention.inbox_hours)?;
        positive(&retention, "idempotency_hours", self.retention.idempotency_hours)?;
        positive(&retention, "dead_letter_hours", self.retention.dead_letter_hours)?;
        positive(&retention, "interval_secs", self.retention.interval_secs)
    }
}

/// Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS (verified against
    /// the system's roots).
    pub url: Secret,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: Secret::new("redis://127.0.0.1:56379") }
    }
}

/// Kafka: the producer used by the outbox relay and the consumers of inboxes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Put before every topic name on the broker, so that installations sharing one broker
    /// (a test suite beside a running platform, staging beside production) never read each
    /// other's events. Outbox rows and handlers keep the plain names.
    pub topic_prefix: String,
    /// Partitions and replication of topics created at start-up when missing.
    pub topic_partitions: i32,
    pub topic_replication: i32,
    /// Rows the relay publishes per round.
    pub relay_batch_size: i64,
    /// How often the relay looks for rows when no notification woke it.
    pub relay_poll_ms: u64,
    /// Upper bound of the relay's backoff while the broker is unreachable.
    pub relay_max_backoff_ms: u64,
    /// How long one publish may wait for the broker before the round is retried.
    pub delivery_timeout_ms: u64,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl` (librdkafka's `security.protocol`).
    pub security_protocol: String,
    /// With SASL: `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN`.
    pub sasl_mechanism: String,
    pub sasl_username: String,
    pub sasl_password: Secret,
    /// PEM CA bundle that signed the brokers' certificates; unset uses the system's roots.
    pub ssl_ca_location: Option<std::path::PathBuf>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:59092".into(),
            topic_prefix: String::new(),
            topic_partitions: 3,
            topic_replication: 1,
            relay_batch_size: 256,
            relay_poll_ms: 1_000,
            relay_max_backoff_ms: 10_000,
            delivery_timeout_ms: 10_000,
            security_protocol: "plaintext".into(),
            sasl_mechanism: "SCRAM-SHA-512".into(),
            sasl_username: String::new(),
            sasl_password: Secret::default(),
            ssl_ca_location: None,
        }
    }
}

impl KafkaConfig {
    /// The name a topic has on the broker.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::invalid(format!("{prefix}.bootstrap_servers"), "must not be empty"));
        }
        // Kafka's own rule for topic names; the longest plain name here has 25 characters.
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if !self.topic_prefix.chars().all(legal) || self.topic_prefix.len() > 200 {
            return Err(ConfigError::invalid(
                format!("{prefix}.topic_prefix"),
                "may hold only ASCII letters, digits, '.', '_' and '-', at most 200 of them",
            ));
        }
        positive(prefix, "topic_partitions", self.topic_partitions.max(0) as u64)?;
        positive(prefix, "topic_replication", self.topic_replication.max(0) as u64)?;
        positive(prefix, "relay_batch_size", self.relay_batch_size.max(0) as u64)?;
        positive(prefix, "relay_poll_ms", self.relay_poll_ms)?;
        positive(prefix, "delivery_timeout_ms", self.delivery_timeout_ms)?;
        let protocol = self.security_protocol.as_str();
        if !matches!(protocol, "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl") {
            return Err(ConfigError::invalid(
                format!("{prefix}.security_protocol"),
                "must be plaintext, ssl, sasl_plaintext or sasl_ssl",
            ));
        }
        if protocol.starts_with("sasl") {
            if !matches!(self.sasl_mechanism.as_str(), "SCRAM-SHA-512" | "SCRAM-SHA-256" | "PLAIN") {
                return Err(ConfigError::invalid(
                    format!("{prefix}.sasl_mechanism"),
                    "must be SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN",
                ));
            }
            if self.sasl_username.is_empty() || self.sasl_password.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{prefix}.sasl_username"),
                    "and sasl_password are required with a sasl_* security_protocol",
                ));
            }
        }
        Ok(())
    }
}

/// The internal identity tokens that services exchange (ARCHITECTURE §4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    pub environment: Environment,
    /// Key that signs internal tokens (HMAC-SHA256); at least 32 bytes.
    pub signing_key: Secret,
    /// Keys still accepted for verification during a rotation.
    pub previous_keys: Vec<Secret>,
    /// Lifetime of minted internal tokens.
    pub token_ttl_secs: u64,
    /// Tolerated clock difference between services.
    pub leeway_secs: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            environment: Environment::Development,
            signing_key: Secret::new(DEV_SIGNING_KEY),
            previous_keys: Vec::new(),
            token_ttl_secs: 300,
            leeway_secs: 5,
        }
    }
}

impl IdentityConfig {
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (index, key) in std::iter::once(&self.signing_key).chain(&self.previous_keys).enumerate() {
            if key.expose().len() < MIN_KEY_BYTES {
                let field =
                    if index == 0 { "signing_key".into() } else { format!("previous_keys[{}]", index - 1) };
                return Err(ConfigError::invalid(
                    format!("{prefix}.{field}"),
                    format!("must be at least {MIN_KEY_BYTES} bytes"),
                ));
            }
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return Err(ConfigError::invalid(
                format!("{prefix}.leeway_secs"),
                format!("must be at most {MAX_LEEWAY_SECS} seconds"),
            ));
        }
        // Known keys in production are refused by `Common::validate`, which sees every section.
        positive(prefix, "token_ttl_secs", self.token_ttl_secs)
    }
}

fn positive(prefix: &str, key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(format!("{prefix}.{key}"), "must be greater than zero"));
    }
    Ok(())
}
