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
use codingagent_kernel::kafka::{InboxConsumer, Relay, topics};
use codingagent_kernel::server::{DependencyCheck, ServiceHost};
use codingagent_kernel::telemetry::metrics::Metrics;
use codingagent_kernel::{CancellationToken, db};
use codingagent_proto::codingagent::classifier::v1::classifier_service_server::ClassifierServiceServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/classifier");

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
    let metrics = Metrics::new();
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

    let background = CancellationToken::new();
    let poll = tokio::spawn(follow_serving(engine.clone(), background.clone()));
    let relay = Relay::new(pool.clone(), &config.kafka, "classifier")?.with_metrics(&metrics);
    let relay = tokio::spawn(relay.run(background.clone()));
    let consumer =
        InboxConsumer::new(pool.clone(), &config.kafka, &config.task_outcomes_group, &[topics::TASK])?;
    let consumer = tokio::spawn(consumer.run(outcomes::TaskOutcomes, background.clone()));

    let service = ClassifierServiceServer::new(grpc::Handlers { engine: engine.clone() })
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes);
    let served = ServiceHost::new(&config.server, &config.identity, metrics)
        .add_service(service)
        .descriptor_set(codingagent_proto::FILE_DESCRIPTOR_SET)
        .http_routes(model_route(engine.clone()))
        .check(db::check(pool.clone()))
        .check(model_check(engine.clone()))
        .serve(listener, shutdown)
        .await;
    background.cancel();
    let _ = tokio::join!(poll, relay, consumer);
    pool.close().await;
    served.map_err(Into::into)
}

/// Hot-swaps to whatever model the registry says serves, so a promotion or rollback made
/// through any replica reaches every replica within `model_poll_ms` (ADR 0007); hourly, drops
/// retry records older than a day, which are of no further use.
async fn follow_serving(engine: Arc<engine::Engine>, stop: CancellationToken) {
    let mut poll = tokio::time::interval(Duration::from_millis(engine.config.model_poll_ms));
    let mut purge = tokio::time::interval(Duration::from_secs(3_600));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = poll.tick() => {
                if let Err(error) = engine.sync_serving().await {
                    tracing::warn!(%error, "cannot load the serving model; the previous one keeps serving");
                }
            }
            _ = purge.tick() => {
                if let Err(error) = codingagent_kernel::idempotency::purge(&engine.pool, codingagent_kernel::idempotency::RETENTION).await {
                    tracing::warn!(%error, "idempotency purge failed");
                }
            }
        }
    }
}
