//! The sections every service shares, and the checks [`super::load`] always runs on them, so
//! that no service can forget one (chat and classifier once never validated their identity
//! section, and production started with the public development key).
//!
//! In production the process refuses to start with a key anyone can know: the development
//! key, a key copied from an example file, or one shorter than 32 bytes (signing or still
//! accepted for verification), a clock leeway that would keep expired tokens alive, or the
//! database password `./dev` uses.

use super::{
    ConfigError, DatabaseConfig, Environment, IdentityConfig, KafkaConfig, RedisConfig, Secret, ServerConfig,
    TelemetryConfig,
};

/// Signing key every development setup shares. Production refuses it.
pub const DEV_SIGNING_KEY: &str = "codingagent-development-signing-key-do-not-use-in-production";

/// Keys published in this repository's example files; production refuses them too.
pub const EXAMPLE_SIGNING_KEYS: &[&str] = &["replace-with-at-least-32-random-bytes-0000"];

/// The database password of the local development setup (`./dev`).
pub const DEV_DATABASE_PASSWORD: &str = "codingagent";

/// The shortest signing key accepted (HMAC-SHA256 wants at least its output size).
pub const MIN_KEY_BYTES: usize = 32;

/// The largest tolerated clock difference between services: tokens live minutes, so a
/// leeway beyond this would keep expired ones valid.
pub const MAX_LEEWAY_SECS: u64 = 60;

/// A configuration's view of the shared sections it embeds; a service without a database,
/// Redis or Kafka leaves those out, a command (`codingagent token`) may have only identity.
#[derive(Debug, Clone, Copy)]
pub struct Common<'a> {
    pub identity: &'a IdentityConfig,
    pub server: Option<&'a ServerConfig>,
    pub telemetry: Option<&'a TelemetryConfig>,
    pub database: Option<&'a DatabaseConfig>,
    pub redis: Option<&'a RedisConfig>,
    pub kafka: Option<&'a KafkaConfig>,
}

impl<'a> Common<'a> {
    /// A configuration with identity alone (a command that mints or checks tokens).
    pub fn identity(identity: &'a IdentityConfig) -> Self {
        Self { identity, server: None, telemetry: None, database: None, redis: None, kafka: None }
    }

    /// A service's sections; add the stores it uses with the methods below.
    pub fn service(
        server: &'a ServerConfig,
        telemetry: &'a TelemetryConfig,
        identity: &'a IdentityConfig,
    ) -> Self {
        Self { server: Some(server), telemetry: Some(telemetry), ..Self::identity(identity) }
    }

    pub fn database(self, database: &'a DatabaseConfig) -> Self {
        Self { database: Some(database), ..self }
    }

    pub fn redis(self, redis: &'a RedisConfig) -> Self {
        Self { redis: Some(redis), ..self }
    }

    pub fn kafka(self, kafka: &'a KafkaConfig) -> Self {
        Self { kafka: Some(kafka), ..self }
    }

    /// Every shared section's own rules, then what production forbids.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(server) = self.server {
            server.validate("server")?;
        }
        self.identity.validate("identity")?;
        if let Some(database) = self.database {
            database.validate("database")?;
        }
        if let Some(kafka) = self.kafka {
            kafka.validate("kafka")?;
        }
        if self.identity.environment == Environment::Production {
            self.validate_production()?;
        }
        Ok(())
    }

    fn validate_production(&self) -> Result<(), ConfigError> {
        let keys = std::iter::once(("identity.signing_key".to_owned(), &self.identity.signing_key)).chain(
            self.identity
                .previous_keys
                .iter()
                .enumerate()
                .map(|(i, key)| (format!("identity.previous_keys[{i}]"), key)),
        );
        for (field, key) in keys {
            refuse_known_key(&field, key)?;
        }
        if let Some(database) = self.database
            && database_password(&database.url).as_deref() == Some(DEV_DATABASE_PASSWORD)
        {
            return Err(ConfigError::invalid(
                "database.url",
                "uses the development database password, which production refuses",
            ));
        }
        Ok(())
    }
}

fn refuse_known_key(field: &str, key: &Secret) -> Result<(), ConfigError> {
    let key = key.expose();
    if key == DEV_SIGNING_KEY {
        return Err(ConfigError::invalid(field, "is the public development key, which production refuses"));
    }
    if EXAMPLE_SIGNING_KEYS.contains(&key) {
        return Err(ConfigError::invalid(field, "is the key from an example file, which production refuses"));
    }
    if key.len() < MIN_KEY_BYTES {
        return Err(ConfigError::invalid(field, format!("must be at least {MIN_KEY_BYTES} bytes")));
    }
    Ok(())
}

/// The password in a `postgres://user:password@host/db` URL, percent-decoded.
fn database_password(url: &Secret) -> Option<String> {
    let rest = url.expose().split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let credentials = authority.rsplit_once('@')?.0;
    let password = credentials.split_once(':')?.1;
    Some(percent_decode(password))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(Some(high)), Some(Some(low))) =
                (bytes.get(i + 1).map(|b| hex(*b)), bytes.get(i + 2).map(|b| hex(*b)))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Owned {
        server: ServerConfig,
        telemetry: TelemetryConfig,
        identity: IdentityConfig,
        database: DatabaseConfig,
    }

    fn production() -> Owned {
        Owned {
            server: ServerConfig::default(),
            telemetry: TelemetryConfig::default(),
            identity: IdentityConfig {
                environment: Environment::Production,
                signing_key: Secret::new("a-real-production-key-of-sufficient-length-42"),
                ..IdentityConfig::default()
            },
            database: DatabaseConfig {
                url: Secret::new("postgres://codingagent:s3cret@db.internal:5432/codingagent"),
                ..DatabaseConfig::default()
            },
        }
    }

    fn check(config: &Owned) -> Result<(), ConfigError> {
        Common::service(&config.server, &config.telemetry, &config.identity)
            .database(&config.database)
            .validate()
    }

    fn refused(config: &Owned, key: &str) {
        let error = check(config).unwrap_err().to_string();
        assert!(error.contains(key), "{error} should name {key}");
    }

    #[test]
    fn production_refuses_every_known_or_weak_key_naming_it() {
        assert!(check(&production()).is_ok());

        let mut config = production();
        config.identity.signing_key = Secret::new(DEV_SIGNING_KEY);
        refused(&config, "identity.signing_key");

        let mut config = production();
        config.identity.signing_key = Secret::new(EXAMPLE_SIGNING_KEYS[0]);
        refused(&config, "identity.signing_key");

        let mut config = production();
        config.identity.previous_keys =
            vec![Secret::new("another-real-key-of-sufficient-length-99"), Secret::new(DEV_SIGNING_KEY)];
        refused(&config, "identity.previous_keys[1]");

        let mut config = production();
        config.identity.signing_key = Secret::new("short");
        refused(&config, "identity.signing_key");

        let mut config = production();
        config.identity.leeway_secs = MAX_LEEWAY_SECS + 1;
        refused(&config, "identity.leeway_secs");

        let mut config = production();
        config.database.url = Secret::new("postgres://codingagent:codingagent@db:5432/codingagent");
        refused(&config, "database.url");
        config.database.url = Secret::new("postgresql://app:codingagen%74@db/codingagent?sslmode=require");
        refused(&config, "database.url");
    }

    #[test]
    fn development_keeps_its_conveniences() {
        let mut config = production();
        config.identity.environment = Environment::Development;
        config.identity.signing_key = Secret::new(DEV_SIGNING_KEY);
        config.database.url = Secret::new("postgres://codingagent:codingagent@127.0.0.1:55432/codingagent");
        assert!(check(&config).is_ok());
    }

    #[test]
    fn passwords_are_read_from_urls() {
        let password = |url: &str| database_password(&Secret::new(url));
        assert_eq!(password("postgres://u:p%40ss@h/db").as_deref(), Some("p@ss"));
        assert_eq!(password("postgres://u@h/db"), None);
        assert_eq!(password("postgres://h:5432/db"), None);
    }
}
