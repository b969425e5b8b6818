//! Layered configuration, the same for every service.
//!
//! Later layers win: defaults in code (`#[serde(default)]`) → a TOML file (`--config`) →
//! environment variables shared by all services (`CODINGAGENT__SECTION__KEY`) → variables
//! for one service (`CODINGAGENT_<SVC>__SECTION__KEY`) → `--set section.key=value` on the
//! command line → [`ServiceConfig::validate`]. Every config struct denies unknown fields, so a
//! misspelt key fails start-up with its name instead of being silently ignored.

mod common;
mod declare;
mod secret;
mod sections;

pub use common::{Common, DEV_DATABASE_PASSWORD, EXAMPLE_SIGNING_KEYS, MAX_LEEWAY_SECS, MIN_KEY_BYTES};
pub use secret::{REDACTED, Secret};
pub use sections::{
    DEV_SIGNING_KEY, DatabaseConfig, Environment, IdentityConfig, KafkaConfig, LogFormat, RedisConfig,
    RetentionConfig, ServerConfig, ServerTlsConfig, TelemetryConfig,
};

use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::str::FromStr;

/// Prefix of environment variables that apply to every service.
pub const GLOBAL_ENV_PREFIX: &str = "CODINGAGENT__";

/// Command-line options every service binary accepts.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML file with the service's settings.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Override one setting, e.g. `--set server.listen_addr=0.0.0.0:50051`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub dump_config: bool,
}

/// A service's whole configuration.
pub trait ServiceConfig: Serialize + DeserializeOwned {
    /// The service name as it appears in environment variables (`CHAT` for
    /// `CODINGAGENT_CHAT__…`).
    const ENV_NAME: &'static str;

    /// The shared sections the service embeds. [`load`] validates them before
    /// [`Self::validate`], so a service cannot skip the identity or production checks. (The
    /// sections are fields of each `Config` rather than one `#[serde(flatten)]` struct
    /// because serde cannot combine `flatten` with `deny_unknown_fields`.)
    fn common(&self) -> Common<'_>;

    /// The service's own cross-field checks that types alone cannot express.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Parse(Box<figment::Error>),
    #[error("invalid override `{0}`: expected KEY=VALUE")]
    Override(String),
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: `{key}` {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), reason: reason.into() }
    }
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        Self::Parse(Box::new(error))
    }
}

/// Loads `T` from every layer, reading the process environment.
pub fn load<T: ServiceConfig>(args: &ConfigArgs) -> Result<T, ConfigError> {
    load_with_env(args, std::env::vars())
}

/// Loads `T` from every layer with an explicit environment, so tests need not mutate the
/// process environment.
pub fn load_with_env<T: ServiceConfig>(
    args: &ConfigArgs,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(file) = &args.file {
        if !file.exists() {
            return Err(ConfigError::MissingFile(file.clone()));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    let service_prefix = format!("CODINGAGENT_{}__", T::ENV_NAME);
    let env: Vec<(String, String)> = env.into_iter().collect();
    for prefix in [GLOBAL_ENV_PREFIX, service_prefix.as_str()] {
        // Sorted so that the outcome never depends on the environment's iteration order.
        let mut layer: Vec<(String, &str)> = env
            .iter()
            .filter_map(|(name, value)| Some((env_key(name.strip_prefix(prefix)?), value.as_str())))
            .collect();
        layer.sort();
        for (key, value) in layer {
            let origin =
                format!("environment variable {prefix}{}", key.to_ascii_uppercase().replace('.', "__"));
            figment = figment.merge(Named::new(origin, &key, value));
        }
    }
    for item in &args.overrides {
        let (key, value) = item
            .split_once('=')
            .filter(|(key, _)| !key.trim().is_empty())
            .ok_or_else(|| ConfigError::Override(item.clone()))?;
        figment = figment.merge(Named::new(format!("--set {item}"), key.trim(), value));
    }
    let config: T = figment.extract()?;
    config.common().validate()?;
    config.validate()?;
    Ok(config)
}

/// The effective configuration as TOML, secrets redacted, for `--dump-config`.
pub fn dump<T: ServiceConfig>(config: &T) -> Result<String, ConfigError> {
    toml::to_string_pretty(config).map_err(|error| ConfigError::invalid("<root>", error.to_string()))
}

/// One setting from the environment or the command line, named after where it came from so
/// errors point there rather than at this file.
struct Named {
    origin: String,
    value: Serialized<Value>,
}

impl Named {
    fn new(origin: String, key: &str, raw: &str) -> Self {
        Self { origin, value: Serialized::default(key, parse_value(raw)) }
    }
}

impl Provider for Named {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.origin.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.value.data()
    }
}

/// `SERVER__LISTEN_ADDR` → `server.listen_addr`.
fn env_key(rest: &str) -> String {
    rest.split("__").map(str::to_ascii_lowercase).collect::<Vec<_>>().join(".")
}

/// Values are read the way figment reads environment variables: TOML scalars and arrays
/// where they parse, plain strings otherwise.
fn parse_value(raw: &str) -> Value {
    match Value::from_str(raw) {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests;
