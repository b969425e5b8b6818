//! CodingAgent's classifier: decides what kind of work a request is and how hard it is, which
//! picks the orchestrator's strategy. A cascade — keyword heuristic, then an ONNX model served
//! by tract, then the llm service — over a versioned feature extractor; the model is a
//! two-head multinomial logistic regression trained here in Rust from a seed corpus of real
//! change descriptions, user corrections and task outcomes, and promoted only when it is no
//! worse than the serving one on a fixed held-out split.

pub mod cascade;
mod classifications;
pub mod config;
mod convert;
pub mod corpus;
mod engine;
pub mod error;
pub mod evaluation;
pub mod features;
mod feedback;
mod grpc;
pub mod heuristic;
mod jobs;
pub mod linear;
mod models;
pub mod onnx;
mod outcomes;
pub mod plan;
mod ratelimit;
mod registry;
mod retrain;
pub mod slot;
mod store;
pub mod train_command;
pub mod training;
mod validate;

pub use config::Config;
pub use retrain::SHIPPED_MODEL;

use anyhow::Context;
use codingagent_kernel::config::ConfigArgs;
use codingagent_kernel::kafka::topics;
use codingagent_kernel::server::{Background, DependencyCheck, ServiceHost};
use codingagent_kernel::telemetry::metrics::Metrics;
use codingagent_kernel::{CancellationToken, db};
use codingagent_proto::codingagent::classifier::v1::classifier_service_server::ClassifierServiceServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The service's own schema migrations (the kernel's run first); operator tools connect with them.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/classifier");

/// Loads the configuration, sets up telemetry and serves until SIGINT/SIGTERM.
pub async fn run(args: ConfigArgs) -> anyhow::Result<()> {
    codingagent_kernel::service::run("classifier", &args, serve).await
}

/// Health: SERVING only while a model is loaded, so traffic goes to replicas that can use
/// the model stage. `/model` tells which one.
fn model_check(engine: Arc<engine::Engine>) -> DependencyCheck {
    DependencyCheck::new("model", move || {
        let loaded = engine.slot.get().is_some();
        async move { if loaded { Ok(()) } else { Err("no serving model is loaded".to_owned()) } }
    })
}

fn model_route(engine: Arc<engine::Engine>) -> axum::Router {
    axum::Router::new().route(
        "/model",
        axum::routing::get(move || {
            let model = engine.slot.get();
            async move {
                let body = serde_json::json!({
                    "loaded": model.is_some(),
                    "model_version": model.as_ref().map(|m| m.version.clone()),
                    "feature_version": features::FEATURE_VERSION,
                });
                ([(http::header::CONTENT_TYPE, "application/json")], body.to_string())
            }
        }),
    )
}

/// Serves the classifier on `listener` until `shutdown`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::for_service("classifier");
    let pool = db::connect(&config.database, "classifier", &MIGRATIONS).await.context("database")?;
    if let Err(error) = topics::ensure(&config.kafka, &[topics::CLASSIFIER, topics::TASK]).await {
        tracing::warn!(%error, "cannot create kafka topics now");
    }
    let redis = codingagent_kernel::redis::connect(&config.redis)?;
    let engine = Arc::new(engine::Engine::new(config.clone(), pool.clone(), Some(redis), &metrics)?);
    // Jobs a crashed process left running would block training forever.
    registry::fail_abandoned_jobs(&pool, 3_600.0).await?;
    if config.training.seed_on_start {
        retrain::bootstrap(&engine).await.context("bootstrap")?;
    }
    if let Err(error) = engine.sync_serving().await {
        tracing::error!(%error, "the serving model does not load; classifying without the model stage");
    }

    let service = ClassifierServiceServer::new(grpc::Handlers { engine: engine.clone() })
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes);
    let follower = engine.clone();
    let served = ServiceHost::new("classifier", &config.server, &config.identity, metrics)
        .add_service(service)
        .descriptor_set(codingagent_proto::FILE_DESCRIPTOR_SET)
        .http_routes(model_route(engine.clone()))
        .check(db::check(pool.clone()))
        .check(model_check(engine.clone()))
        .outbox(&pool, &config.kafka)
        .consumer(&pool, &config.kafka, &config.task_outcomes_group, &[topics::TASK], outcomes::TaskOutcomes)
        .retention(&pool, &config.database)
        .background(Background::periodic(
            "follow-serving-model",
            Duration::from_millis(config.model_poll_ms),
            move || {
                let engine = follower.clone();
                async move {
                    // A model that does not load leaves the previous one serving.
                    engine.sync_serving().await.context("cannot load the serving model")?;
                    Ok(())
                }
            },
        ))
        .serve(listener, shutdown)
        .await;
    pool.close().await;
    served.map_err(Into::into)
}
