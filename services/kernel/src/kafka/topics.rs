//! Topic names and their creation at start-up.

use crate::config::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Events about tasks, runs and their logs (orchestration).
pub const TASK: &str = "codingagent.task.v1";
/// Conversations and messages (chat).
pub const CHAT: &str = "codingagent.chat.v1";
/// Repositories, pull requests and webhooks (github).
pub const GITHUB: &str = "codingagent.github.v1";
/// Build failures and fix attempts (cicd-monitor).
pub const CICD: &str = "codingagent.cicd.v1";
/// Inference usage, registry changes and A/B tests (llm).
pub const LLM: &str = "codingagent.llm.v1";
/// Classifications, feedback and model versions (classifier).
pub const CLASSIFIER: &str = "codingagent.classifier.v1";

/// Client settings shared by producers, consumers and the admin client, security included.
pub(crate) fn client_config(config: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", client_id)
        .set("security.protocol", &config.security_protocol);
    if config.security_protocol.starts_with("sasl") {
        client
            .set("sasl.mechanism", &config.sasl_mechanism)
            .set("sasl.username", &config.sasl_username)
            .set("sasl.password", config.sasl_password.expose());
    }
    if let Some(ca) = &config.ssl_ca_location {
        client.set("ssl.ca.location", ca.display().to_string());
    }
    client
}

/// Creates every topic in `names` that does not exist yet; existing ones are left as they are.
pub async fn ensure(config: &KafkaConfig, names: &[&str]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config, "codingagent-admin").create()?;
    let names: Vec<String> = names.iter().map(|name| config.topic(name)).collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(name, config.topic_partitions, TopicReplication::Fixed(config.topic_replication))
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code))
                    .inspect_err(|_| tracing::error!(topic, ?code, "cannot create topic"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use rdkafka::producer::FutureProducer;

    #[test]
    fn sasl_over_tls_settings_reach_a_client_this_build_can_create() {
        let config = KafkaConfig {
            security_protocol: "sasl_ssl".into(),
            sasl_username: "relay".into(),
            sasl_password: Secret::new("s3cret"),
            ..KafkaConfig::default()
        };
        let client = client_config(&config, "test");
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("sasl.username"), Some("relay"));
        // librdkafka refuses sasl_ssl at creation unless it was built with OpenSSL.
        let created: Result<FutureProducer, _> = client.create();
        assert!(created.is_ok(), "{:?}", created.err());
        assert!(client_config(&KafkaConfig::default(), "t").get("sasl.username").is_none());
    }
}
