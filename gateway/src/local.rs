//! What the gateway answers itself: `grpc.health.v1` (the whole gateway, and each public
//! service by whether its pool has a usable endpoint) and reflection v1 and v1alpha over
//! every contract compiled into the proto crate, so `grpcurl -plaintext GATEWAY list` and
//! `describe` work without proto files and without reaching any backend.

use crate::grpcweb::{Protocol, WebBody};
use crate::state::Gateway;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tonic::body::Body;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceExt;

/// Path prefixes of the services the gateway serves itself.
pub(crate) const LOCAL_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Health and reflection.
#[derive(Clone)]
pub(crate) struct Local {
    routes: Routes,
    reporter: HealthReporter,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(codingagent_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

impl Local {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let (reporter, health) = tonic_health::server::health_reporter();
        let routes = Routes::new(health)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?);
        Ok(Self { routes, reporter })
    }

    pub(crate) fn serves(path: &str) -> bool {
        LOCAL_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
    }

    /// Answers a health or reflection call. Reflection streams both ways, so the body is
    /// passed on as it arrives rather than read first.
    pub(crate) async fn call(&self, request: Request<Incoming>, protocol: Protocol) -> Response<Body> {
        let mut request = request.map(Body::new);
        if protocol.is_web() {
            request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        }
        let response = match self.routes.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        if !protocol.is_web() {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        parts.headers.insert(CONTENT_TYPE, HeaderValue::from_static(protocol.response_content_type()));
        Response::from_parts(parts, Body::new(WebBody::new(body, protocol == Protocol::WebText)))
    }

    /// Keeps the health statuses current until shutdown, then reports `NOT_SERVING`.
    pub(crate) async fn report(self, gateway: Arc<Gateway>) {
        loop {
            let serving = !gateway.shutdown.is_cancelled();
            let status =
                |up: bool| if up && serving { ServingStatus::Serving } else { ServingStatus::NotServing };
            self.reporter.set_service_status("", status(true)).await;
            let routes = gateway.routes();
            for service in gateway.contracts.services() {
                let package = service.rsplit_once('.').map_or(service.as_str(), |(p, _)| p);
                let up = routes
                    .get(package)
                    .and_then(|route| gateway.pools.get(&route.backend))
                    .is_some_and(|pool| pool.is_usable());
                self.reporter.set_service_status(service, status(up)).await;
            }
            if !serving {
                return;
            }
            tokio::select! {
                () = gateway.shutdown.cancelled() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
