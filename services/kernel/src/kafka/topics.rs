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

/// Client settings shared by producers, consumers and the admin client.
pub(crate) fn client_config(config: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap_servers).set("client.id", client_id);
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
