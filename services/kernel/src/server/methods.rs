//! The methods one server actually serves, read from the descriptor sets its services were
//! compiled from. Metrics label only these (any other path is one `unknown` series, so 10⁶
//! requests to made-up paths cannot grow the registry), and the stream limit applies to the
//! server-streaming ones.

use prost::Message;
use prost_types::FileDescriptorSet;
use std::collections::HashMap;

/// What the server knows about one of its methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// `codingagent.chat.v1.ChatService`
    pub service: String,
    /// `PostMessage`
    pub name: String,
    /// The response is a stream that may stay open for as long as the client likes.
    pub server_streaming: bool,
}

/// Served methods by HTTP path (`/codingagent.chat.v1.ChatService/PostMessage`).
#[derive(Debug, Clone, Default)]
pub struct MethodTable {
    by_path: HashMap<String, Method>,
}

/// Health and reflection, which every server adds itself.
const BUILT_IN: &[(&str, &str, bool)] = &[
    ("grpc.health.v1.Health", "Check", false),
    ("grpc.health.v1.Health", "Watch", true),
    ("grpc.reflection.v1.ServerReflection", "ServerReflectionInfo", true),
    ("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", true),
];

impl MethodTable {
    /// The methods of `services` (full names) found in `descriptor_sets`, plus health and
    /// reflection. A service missing from the descriptors contributes no method, which only
    /// means its calls are counted as `unknown`.
    pub fn new(services: &[String], descriptor_sets: &[&[u8]]) -> Self {
        let mut by_path = HashMap::new();
        for (service, name, server_streaming) in BUILT_IN {
            by_path.insert(
                format!("/{service}/{name}"),
                Method {
                    service: (*service).into(),
                    name: (*name).into(),
                    server_streaming: *server_streaming,
                },
            );
        }
        for set in descriptor_sets {
            let Ok(set) = FileDescriptorSet::decode(*set) else {
                tracing::warn!("a descriptor set does not decode; its methods are labelled unknown");
                continue;
            };
            for file in &set.file {
                let package = file.package();
                for service in &file.service {
                    let full = if package.is_empty() {
                        service.name().to_owned()
                    } else {
                        format!("{package}.{}", service.name())
                    };
                    if !services.contains(&full) {
                        continue;
                    }
                    for method in &service.method {
                        by_path.insert(
                            format!("/{full}/{}", method.name()),
                            Method {
                                service: full.clone(),
                                name: method.name().to_owned(),
                                server_streaming: method.server_streaming(),
                            },
                        );
                    }
                }
            }
        }
        Self { by_path }
    }

    pub fn get(&self, path: &str) -> Option<&Method> {
        self.by_path.get(path)
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
    use prost_types::{FileDescriptorProto, MethodDescriptorProto, ServiceDescriptorProto};

    fn descriptor() -> Vec<u8> {
        let method = |name: &str, streaming| MethodDescriptorProto {
            name: Some(name.into()),
            server_streaming: Some(streaming),
            ..Default::default()
        };
        let service = |name: &str| ServiceDescriptorProto {
            name: Some(name.into()),
            method: vec![method("Get", false), method("Watch", true)],
            ..Default::default()
        };
        FileDescriptorSet {
            file: vec![FileDescriptorProto {
                package: Some("demo.v1".into()),
                service: vec![service("ThingService"), service("OtherService")],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn only_the_methods_of_served_services_are_known() {
        let set = descriptor();
        let table = MethodTable::new(&["demo.v1.ThingService".into()], &[&set]);
        let get = table.get("/demo.v1.ThingService/Get").unwrap();
        assert_eq!(
            (get.service.as_str(), get.name.as_str(), get.server_streaming),
            ("demo.v1.ThingService", "Get", false)
        );
        assert!(table.get("/demo.v1.ThingService/Watch").unwrap().server_streaming);
        assert!(table.get("/demo.v1.OtherService/Get").is_none(), "not served here");
        assert!(table.get("/demo.v1.ThingService/Made").is_none());
        assert!(table.get("/grpc.health.v1.Health/Watch").unwrap().server_streaming);
        assert_eq!(table.len(), 6);
    }
}
