//! The server skeleton every service runs: one port speaking gRPC (HTTP/2), grpc-web and plain
//! HTTP (`/metrics` and service-specific routes such as uploads), with health, reflection,
//! identity, limits and an ordered graceful shutdown.
//!
//! A service builds a [`ServiceHost`], adds its tonic services, dependency checks, HTTP
//! routes and [`Background`] tasks (relay, consumers, periodic jobs), and calls
//! [`ServiceHost::serve`]. The host supervises the background tasks (restart with backoff,
//! `NOT_SERVING` while a required one is down). Shutdown runs in this order: health turns
//! `NOT_SERVING`, the listener stops accepting, in-flight calls get
//! [`ServerConfig::shutdown_grace`] to finish, background tasks are stopped and awaited (the
//! relay publishes what is left and flushes Kafka), then `serve` returns so the caller can
//! close its pools.

mod background;
mod layers;
mod limits;
mod methods;
mod readiness;
mod web;

pub use background::Background;
pub use layers::{MessageLimitLayer, TraceLayer};
pub use limits::{BodyTimeoutLayer, StreamLimitLayer, StreamSlot, StreamSlots};
pub use methods::{Method, MethodTable};
pub use readiness::{CheckFn, DependencyCheck};
pub use web::WebLayer;

use crate::config::{IdentityConfig, ServerConfig};
use crate::identity::{AuthLayer, TokenVerifier};
use crate::telemetry::metrics::Metrics;
use axum::routing::get;
use http::{Request, Response};
use readiness::Readiness;
use std::convert::Infallible;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tower::{Service, ServiceBuilder};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection descriptors are invalid: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server task ended abnormally: {0}")]
    Task(String),
    #[error("tls: {0}")]
    Tls(String),
}

/// Headers a browser must be allowed to read so grpc-web clients see statuses and details.
const EXPOSED_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// Assembles one service's server.
#[derive(Debug)]
pub struct ServiceHost {
    name: String,
    config: ServerConfig,
    routes: RoutesBuilder,
    http: axum::Router,
    descriptor_sets: Vec<&'static [u8]>,
    service_names: Vec<String>,
    checks: Vec<DependencyCheck>,
    background: Vec<Background>,
    verifier: TokenVerifier,
    metrics: Metrics,
}

impl ServiceHost {
    /// `name` labels the service's spans and background tasks; create `metrics` with
    /// [`Metrics::for_service`] so its series carry the same name.
    pub fn new(name: &str, config: &ServerConfig, identity: &IdentityConfig, metrics: Metrics) -> Self {
        Self {
            name: name.to_owned(),
            config: config.clone(),
            routes: RoutesBuilder::default(),
            http: axum::Router::new(),
            descriptor_sets: Vec::new(),
            service_names: Vec::new(),
            checks: Vec::new(),
            background: Vec::new(),
            verifier: TokenVerifier::new(identity),
            metrics,
        }
    }

    /// Adds a tonic service. Its name is reported by health and its descriptors must be added
    /// with [`Self::descriptor_set`] for reflection. Set the generated server's
    /// `max_decoding_message_size` from [`ServerConfig::max_message_bytes`].
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<Request<Body>, Error = Infallible, Response = Response<Body>>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME.to_owned());
        self.routes.add_service(service);
        self
    }

    /// An encoded `FileDescriptorSet` to serve through reflection.
    pub fn descriptor_set(mut self, set: &'static [u8]) -> Self {
        self.descriptor_sets.push(set);
        self
    }

    /// Plain HTTP routes served on the same port (uploads, webhooks). They pass through the
    /// same identity check as gRPC calls.
    pub fn http_routes(mut self, router: axum::Router) -> Self {
        self.http = self.http.merge(router);
        self
    }

    /// A dependency that must answer before the service reports `SERVING`.
    pub fn check(mut self, check: DependencyCheck) -> Self {
        self.checks.push(check);
        self
    }

    /// A task to run beside the server for as long as it serves, under supervision.
    pub fn background(mut self, task: Background) -> Self {
        self.background.push(task);
        self
    }

    /// The outbox relay of `pool`'s schema, a required task, reporting on this host's
    /// metrics. A producer that cannot be created (a bad setting) keeps the task failing, so
    /// the service is `NOT_SERVING` and says why, rather than serving without events.
    pub fn outbox(self, pool: &sqlx::PgPool, kafka: &crate::config::KafkaConfig) -> Self {
        let task = match crate::kafka::Relay::new(pool.clone(), kafka, &self.name) {
            Ok(relay) => relay.with_metrics(&self.metrics).task(),
            Err(error) => {
                let reason = error.to_string();
                Background::required("outbox-relay", move |_stop| {
                    let reason = reason.clone();
                    async move { anyhow::bail!("cannot create the kafka producer: {reason}") }
                })
            }
        };
        self.background(task)
    }

    /// A consumer group applying `topics` through `handler` and the inbox of `pool`'s
    /// schema, a required task.
    pub fn consumer<H>(
        self,
        pool: &sqlx::PgPool,
        kafka: &crate::config::KafkaConfig,
        group: &str,
        topics: &[&str],
        handler: H,
    ) -> Self
    where
        H: crate::kafka::EventHandler + Clone + 'static,
    {
        let task =
            crate::kafka::InboxConsumer::task(pool.clone(), kafka, group, topics, handler, &self.metrics);
        self.background(task)
    }

    /// The kernel's retention job on `pool`'s schema.
    pub fn retention(self, pool: &sqlx::PgPool, database: &crate::config::DatabaseConfig) -> Self {
        let task = crate::retention::job(pool.clone(), &database.retention);
        self.background(task)
    }

    /// Serves on `listener` until `shutdown` is cancelled, then shuts down in order.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<(), ServeError> {
        let (reporter, health) = tonic_health::server::health_reporter();
        let readiness = Readiness::new(reporter, self.service_names.clone()).await;
        let stop_background = CancellationToken::new();
        let supervisor = background::Supervisor::new(&self.name, &self.metrics);
        let mut checks = self.checks;
        let mut tasks = Vec::new();
        for task in self.background {
            let (handle, check) = supervisor.spawn(task, stop_background.clone());
            tasks.push(handle);
            checks.extend(check);
        }

        let methods = std::sync::Arc::new(MethodTable::new(&self.service_names, &self.descriptor_sets));
        let mut routes = self.routes;
        routes.add_service(health);
        routes.add_service(reflection_builder(&self.descriptor_sets).build_v1()?);
        routes.add_service(reflection_builder(&self.descriptor_sets).build_v1alpha()?);
        let metrics = self.metrics.clone();
        let router = routes
            .routes()
            .into_axum_router()
            .merge(self.http)
            .route("/metrics", get(move || std::future::ready(metrics.encode())));

        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::mirror_request())
            .allow_methods([http::Method::POST, http::Method::GET, http::Method::OPTIONS])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(EXPOSED_HEADERS.map(http::HeaderName::from_static))
            .max_age(Duration::from_secs(600));
        // Outermost first. grpc-web (only grpc-web: plain HTTP/1.1 passes) is translated
        // before the body deadline wraps the body (so a slow browser gets the deadline's own
        // status, not tonic-web's INTERNAL wrapping of it) and before metrics and auth see the
        // request, so they treat browser and native clients alike; metrics
        // label only served methods, since they see unauthenticated requests. Limits sit
        // inside auth so a refused or unauthenticated request never takes a slot, and the
        // stream limit needs the caller.
        let stack = ServiceBuilder::new()
            .layer(TraceLayer::new(&self.name))
            .layer(cors)
            .layer(WebLayer)
            .layer(BodyTimeoutLayer::new(Duration::from_millis(self.config.request_body_timeout_ms)))
            .layer(self.metrics.layer(methods.clone()))
            .layer(MessageLimitLayer)
            .layer(AuthLayer::new(self.verifier))
            .layer(StreamLimitLayer::new(methods, self.config.max_streams_per_caller))
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(self.config.concurrency_limit));

        let stop_accepting = CancellationToken::new();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.config.tls {
            builder = builder.tls_config(tls_config(tls)?).map_err(|e| ServeError::Tls(e.to_string()))?;
        }
        let server = builder
            .accept_http1(true)
            .max_concurrent_streams(Some(self.config.max_streams_per_connection))
            .http2_keepalive_interval(Some(Duration::from_secs(self.config.keepalive_interval_secs)))
            .http2_keepalive_timeout(Some(Duration::from_secs(self.config.keepalive_timeout_secs)))
            .layer(stack)
            .add_routes(router.into())
            // With our own listener, tonic's `tcp_nodelay` does not apply: set it on the
            // incoming stream, or Nagle's algorithm holds a stream's small frames ~40 ms.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop_accepting.clone().cancelled_owned(),
            );
        // The server runs on its own task so it keeps accepting (connections already queued
        // in the kernel included) while the shutdown sequence below waits.
        let mut server = tokio::spawn(server);

        let stop_checks = CancellationToken::new();
        let watcher = tokio::spawn(readiness.clone().watch(
            checks,
            Duration::from_millis(self.config.readiness_interval_ms),
            stop_checks.clone(),
        ));

        tokio::select! {
            result = &mut server => {
                stop_checks.cancel();
                stop_background.cancel();
                join_background(tasks, self.config.shutdown_grace()).await;
                return flatten(result);
            }
            () = shutdown.cancelled() => {}
        }
        tracing::info!("shutting down: not serving");
        stop_checks.cancel();
        let _ = watcher.await;
        readiness.set(tonic_health::ServingStatus::NotServing).await;
        tokio::time::sleep(Duration::from_millis(self.config.shutdown_drain_delay_ms)).await;
        stop_accepting.cancel();
        let grace = self.config.shutdown_grace();
        let served = match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => {
                tracing::info!("in-flight calls drained");
                flatten(result)
            }
            Err(_) => {
                tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing remaining calls");
                server.abort();
                Ok(())
            }
        };
        // After the calls, so the events of the last requests are still relayed.
        stop_background.cancel();
        join_background(tasks, grace).await;
        served
    }
}

/// Waits for stopped background tasks (the relay drains and flushes), at most `grace`.
async fn join_background(tasks: Vec<tokio::task::JoinHandle<()>>, grace: Duration) {
    if tokio::time::timeout(grace, futures::future::join_all(tasks)).await.is_err() {
        tracing::warn!(grace_secs = grace.as_secs(), "background tasks did not stop in time");
    }
}

/// The server's TLS settings from the configured PEM files.
fn tls_config(tls: &crate::config::ServerTlsConfig) -> Result<tonic::transport::ServerTlsConfig, ServeError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", path.display())))
    };
    let identity = tonic::transport::Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
    let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca_file {
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

fn flatten(
    joined: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    match joined {
        Ok(result) => result.map_err(Into::into),
        Err(error) => Err(ServeError::Task(error.to_string())),
    }
}

fn reflection_builder(sets: &[&'static [u8]]) -> tonic_reflection::server::Builder<'static> {
    sets.iter().fold(
        // Health and google.rpc's error details too, so grpcurl can print error details.
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET),
        |builder, set| builder.register_encoded_file_descriptor_set(set),
    )
}
