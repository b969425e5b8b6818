//! What the gateway knows about every public method, read from the contracts compiled into
//! the proto crate: which package (and so which backend) it belongs to, whether it streams,
//! and whether the contract marks it safe to retry (`option idempotency_level`). Paths not
//! in this table are answered `UNIMPLEMENTED` before any other work, so made-up paths cost
//! one hash lookup and create no metric series.

use prost::Message;
use prost_types::FileDescriptorSet;
use prost_types::method_options::IdempotencyLevel;
use std::collections::HashMap;
use std::sync::Arc;

/// One method of the public contracts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// `codingagent.chat.v1`
    pub package: Arc<str>,
    /// `/codingagent.chat.v1.ChatService/PostMessage`, the metric label.
    pub path: Arc<str>,
    pub server_streaming: bool,
    pub client_streaming: bool,
    /// `NO_SIDE_EFFECTS` or `IDEMPOTENT` in the contract: the gateway may retry it.
    pub idempotent: bool,
}

/// Methods by HTTP path, and the full names of the services, for reflection.
#[derive(Debug, Clone, Default)]
pub struct Contracts {
    by_path: HashMap<String, Arc<Method>>,
    services: Vec<String>,
}

impl Contracts {
    /// Every service in `sets` whose package starts with `codingagent.` (the events package
    /// has messages only).
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        let mut contracts = Self::default();
        for set in sets {
            let Ok(set) = FileDescriptorSet::decode(*set) else {
                tracing::warn!("a descriptor set does not decode; its methods are not routed");
                continue;
            };
            for file in &set.file {
                let package: Arc<str> = file.package().into();
                if !package.starts_with("codingagent.") {
                    continue;
                }
                for service in &file.service {
                    let full = format!("{package}.{}", service.name());
                    contracts.services.push(full.clone());
                    for method in &service.method {
                        let path = format!("/{full}/{}", method.name());
                        let level = method.options.as_ref().map(|o| o.idempotency_level());
                        let entry = Method {
                            package: package.clone(),
                            path: path.as_str().into(),
                            server_streaming: method.server_streaming(),
                            client_streaming: method.client_streaming(),
                            idempotent: matches!(
                                level,
                                Some(IdempotencyLevel::NoSideEffects | IdempotencyLevel::Idempotent)
                            ),
                        };
                        contracts.by_path.insert(path, Arc::new(entry));
                    }
                }
            }
        }
        contracts.services.sort();
        contracts
    }

    /// The contracts of this build.
    pub fn compiled() -> Self {
        Self::from_descriptor_sets(&[codingagent_proto::FILE_DESCRIPTOR_SET])
    }

    pub fn get(&self, path: &str) -> Option<&Arc<Method>> {
        self.by_path.get(path)
    }

    /// Full names of the public services (`codingagent.chat.v1.ChatService`).
    pub fn services(&self) -> &[String] {
        &self.services
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_contracts_are_known_with_their_streaming_and_retry_marks() {
        let contracts = Contracts::compiled();
        let post = contracts.get("/codingagent.chat.v1.ChatService/PostMessage").unwrap();
        assert_eq!(&*post.package, "codingagent.chat.v1");
        assert!(!post.server_streaming && !post.idempotent, "posting is not safe to repeat");
        let logs =
            contracts.get("/codingagent.orchestration.v1.OrchestrationService/StreamTaskLogs").unwrap();
        assert!(logs.server_streaming);
        let get = contracts.get("/codingagent.orchestration.v1.OrchestrationService/GetTask").unwrap();
        assert!(get.idempotent, "marked NO_SIDE_EFFECTS in the contract");
        assert!(contracts.get("/codingagent.chat.v1.ChatService/Nope").is_none());
        assert!(contracts.services().iter().any(|s| s == "codingagent.llm.v1.LlmService"));
        assert!(
            contracts.services().iter().all(|s| !s.starts_with("codingagent.events.")),
            "the events package has no services"
        );
    }
}
