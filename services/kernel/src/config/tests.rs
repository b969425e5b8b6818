use super::*;
use serde::Deserialize;
use std::io::Write;

#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Demo {
    server: ServerConfig,
    telemetry: TelemetryConfig,
    identity: IdentityConfig,
    database: DatabaseConfig,
    name: String,
    retries: u32,
}

impl ServiceConfig for Demo {
    const ENV_NAME: &'static str = "DEMO";

    fn common(&self) -> Common<'_> {
        Common::service(&self.server, &self.telemetry, &self.identity).database(&self.database)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.retries > 10 {
            return Err(ConfigError::invalid("retries", "must be at most 10"));
        }
        Ok(())
    }
}

fn toml_file(text: &str) -> tempfile_like::TempToml {
    tempfile_like::TempToml::new(text)
}

/// A throwaway TOML file; kept tiny to avoid a tempfile dependency.
mod tempfile_like {
    use std::path::PathBuf;

    pub(super) struct TempToml(pub(super) PathBuf);

    impl TempToml {
        pub(super) fn new(text: &str) -> Self {
            let path = std::env::temp_dir().join(format!("cfg-{}.toml", uuid::Uuid::new_v4()));
            let mut file = std::fs::File::create(&path).expect("create temp file");
            super::Write::write_all(&mut file, text.as_bytes()).expect("write temp file");
            Self(path)
        }
    }

    impl Drop for TempToml {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn defaults_apply_without_any_layer() {
    let config: Demo = load_with_env(&ConfigArgs::default(), env(&[])).unwrap();
    assert_eq!(config.retries, 0);
    assert_eq!(config.server.max_message_bytes, ServerConfig::default().max_message_bytes);
}

#[test]
fn each_layer_overrides_the_one_before() {
    let file = toml_file("name = \"from-file\"\nretries = 1\n[server]\nconcurrency_limit = 11\n");
    let base = ConfigArgs { file: Some(file.0.clone()), ..Default::default() };

    let only_file: Demo = load_with_env(&base, env(&[])).unwrap();
    assert_eq!((only_file.name.as_str(), only_file.retries), ("from-file", 1));

    let global = env(&[("CODINGAGENT__RETRIES", "2"), ("CODINGAGENT__NAME", "global")]);
    let with_global: Demo = load_with_env(&base, global.clone()).unwrap();
    assert_eq!((with_global.name.as_str(), with_global.retries), ("global", 2));

    let mut both = global.clone();
    both.push(("CODINGAGENT_DEMO__RETRIES".into(), "3".into()));
    both.push(("CODINGAGENT_DEMO__SERVER__CONCURRENCY_LIMIT".into(), "33".into()));
    both.push(("CODINGAGENT_OTHER__RETRIES".into(), "9".into()));
    let with_service: Demo = load_with_env(&base, both.clone()).unwrap();
    assert_eq!(with_service.retries, 3, "service env beats global env; other services ignored");
    assert_eq!(with_service.server.concurrency_limit, 33);
    assert_eq!(with_service.name, "global");

    let cli = ConfigArgs { overrides: vec!["retries=4".into()], ..base };
    let with_cli: Demo = load_with_env(&cli, both).unwrap();
    assert_eq!(with_cli.retries, 4, "the command line wins over everything");
    assert_eq!(with_cli.server.concurrency_limit, 33);
}

#[test]
fn unknown_keys_fail_with_their_name() {
    let file = toml_file("[server]\nlisten_adr = \"127.0.0.1:1\"\n");
    let args = ConfigArgs { file: Some(file.0.clone()), ..Default::default() };
    let error = load_with_env::<Demo>(&args, env(&[])).unwrap_err().to_string();
    assert!(error.contains("listen_adr"), "{error}");

    let error = load_with_env::<Demo>(&ConfigArgs::default(), env(&[("CODINGAGENT_DEMO__NAMEE", "x")]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("namee"), "{error}");
}

#[test]
fn validation_runs_last_and_names_the_key() {
    let args = ConfigArgs { overrides: vec!["retries=11".into()], ..Default::default() };
    let error = load_with_env::<Demo>(&args, env(&[])).unwrap_err().to_string();
    assert!(error.contains("`retries` must be at most 10"), "{error}");

    let args = ConfigArgs { overrides: vec!["server.max_message_bytes=0".into()], ..Default::default() };
    let error = load_with_env::<Demo>(&args, env(&[])).unwrap_err().to_string();
    assert!(error.contains("server.max_message_bytes"), "{error}");
}

#[test]
fn malformed_overrides_and_missing_files_are_reported() {
    let args = ConfigArgs { overrides: vec!["=3".into()], ..Default::default() };
    assert!(matches!(load_with_env::<Demo>(&args, env(&[])), Err(ConfigError::Override(_))));
    let args = ConfigArgs { file: Some("/nonexistent/codingagent.toml".into()), ..Default::default() };
    assert!(matches!(load_with_env::<Demo>(&args, env(&[])), Err(ConfigError::MissingFile(_))));
}

#[test]
fn type_errors_name_the_key() {
    let error = load_with_env::<Demo>(&ConfigArgs::default(), env(&[("CODINGAGENT__RETRIES", "many")]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("retries"), "{error}");
}

#[test]
fn dump_redacts_secrets() {
    let args = ConfigArgs {
        overrides: vec!["database.url=postgres://u:supersecret@db/x".into()],
        ..Default::default()
    };
    let config: Demo = load_with_env(&args, env(&[])).unwrap();
    assert_eq!(config.database.url.expose(), "postgres://u:supersecret@db/x");
    let dumped = dump(&config).unwrap();
    assert!(!dumped.contains("supersecret"), "{dumped}");
    assert!(dumped.contains(REDACTED), "{dumped}");
    assert!(!format!("{config:?}").contains("supersecret"));
}

#[test]
fn a_topic_prefix_names_topics_and_must_be_legal_for_kafka() {
    let mut kafka = KafkaConfig { topic_prefix: "staging.".into(), ..KafkaConfig::default() };
    assert!(kafka.validate("kafka").is_ok());
    assert_eq!(kafka.topic("codingagent.chat.v1"), "staging.codingagent.chat.v1");
    kafka.topic_prefix = "staging/".into();
    let error = kafka.validate("kafka").unwrap_err().to_string();
    assert!(error.contains("kafka.topic_prefix"), "{error}");
    assert_eq!(KafkaConfig::default().topic("codingagent.chat.v1"), "codingagent.chat.v1");
}

#[test]
fn load_always_validates_the_shared_sections() {
    // A service's own validate() no longer has to remember the identity section: the
    // production key check runs for every configuration that `load` returns.
    let env = [
        ("CODINGAGENT__IDENTITY__ENVIRONMENT".to_owned(), "production".to_owned()),
        ("CODINGAGENT__DATABASE__URL".to_owned(), "postgres://app:s3cret@db/codingagent".to_owned()),
    ];
    let error = load_with_env::<Demo>(&ConfigArgs::default(), env.clone()).unwrap_err().to_string();
    assert!(error.contains("identity.signing_key") && error.contains("development key"), "{error}");
    let mut env = env.to_vec();
    env.push((
        "CODINGAGENT__IDENTITY__SIGNING_KEY".into(),
        "a-real-production-key-of-sufficient-length".into(),
    ));
    assert!(load_with_env::<Demo>(&ConfigArgs::default(), env).is_ok());
}

#[test]
fn tls_and_kafka_security_settings_are_checked_naming_the_key() {
    let server = ServerConfig {
        tls: Some(ServerTlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: None,
        }),
        ..ServerConfig::default()
    };
    assert!(server.validate("server").unwrap_err().to_string().contains("server.tls.cert_file"));

    let kafka = |protocol: &str| KafkaConfig { security_protocol: protocol.into(), ..KafkaConfig::default() };
    assert!(kafka("tls").validate("kafka").unwrap_err().to_string().contains("kafka.security_protocol"));
    let missing_login = kafka("sasl_ssl").validate("kafka").unwrap_err().to_string();
    assert!(missing_login.contains("kafka.sasl_username"), "{missing_login}");
    let with_login = KafkaConfig {
        sasl_username: "relay".into(),
        sasl_password: Secret::new("s3cret"),
        sasl_mechanism: "GSSAPI".into(),
        ..kafka("sasl_ssl")
    };
    assert!(with_login.validate("kafka").unwrap_err().to_string().contains("kafka.sasl_mechanism"));
    assert!(KafkaConfig { sasl_mechanism: "SCRAM-SHA-256".into(), ..with_login }.validate("kafka").is_ok());
}
