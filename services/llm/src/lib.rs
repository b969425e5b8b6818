//! The llm service: one front door to every model CodingAgent uses. It talks to Ollama and to
//! OpenAI-compatible endpoints through one provider trait, keeps a registry of what they
//! offer, chooses a model for each call (explicit → A/B test → learned from task outcomes →
//! hardware default), serves deterministic prompts from a Redis cache, records the usage of
//! every call, enforces monthly token budgets, and falls back to a cloud model behind a
//! circuit breaker when the local provider fails.

mod ab_api;
pub mod abtest;
pub mod breaker;
mod budget;
pub mod cache;
pub mod config;
mod convert;
mod engine;
pub mod error;
mod events;
mod grpc;
pub mod hardware;
mod outcomes;
pub mod provider;
mod registry;
pub mod request;
pub mod selection;
mod store;
mod usage_api;

pub use config::Config;

use anyhow::Context;
use codingagent_kernel::config::ConfigArgs;
use codingagent_kernel::kafka::topics;
use codingagent_kernel::server::{Background, ServiceHost};
use codingagent_kernel::telemetry::metrics::Metrics;
use codingagent_kernel::{CancellationToken, db};
use codingagent_proto::codingagent::llm::v1::llm_service_server::LlmServiceServer;
use provider::{Provider, ollama::Ollama, openai::OpenAi};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The service's own schema migrations (the kernel's run first); operator tools connect with them.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/llm");

/// Loads the configuration, sets up telemetry and serves until SIGINT/SIGTERM.
pub async fn run(args: ConfigArgs) -> anyhow::Result<()> {
    codingagent_kernel::service::run("llm", &args, serve).await
}

/// The configured providers; one whose HTTP client cannot be built stops start-up.
fn providers(config: &Config) -> anyhow::Result<Vec<Arc<dyn Provider>>> {
    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    if let Some(ollama) = &config.ollama {
        let provider = Ollama::new(
            "ollama",
            &ollama.base_url,
            Duration::from_millis(ollama.connect_timeout_ms),
            Duration::from_millis(ollama.idle_timeout_ms),
        )
        .context("http client for provider ollama")?;
        providers.push(Arc::new(provider));
    }
    for openai in &config.openai {
        let provider = OpenAi::new(
            &openai.name,
            &openai.base_url,
            openai.api_key.clone(),
            openai.cloud,
            Duration::from_millis(openai.connect_timeout_ms),
            Duration::from_millis(openai.idle_timeout_ms),
        )
        .with_context(|| format!("http client for provider {}", openai.name))?;
        providers.push(Arc::new(provider));
    }
    Ok(providers)
}

/// Serves the llm service on `listener` until `shutdown`, then stops in order: health, calls
/// in flight, background work, the outbox relay, the database pool.
pub async fn serve(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::for_service("llm");
    let pool = db::connect(&config.database, "llm", &MIGRATIONS).await.context("database")?;
    if let Err(error) = topics::ensure(&config.kafka, &[topics::LLM, topics::TASK]).await {
        // Events wait in the outbox until Kafka is back; starting is still useful.
        tracing::warn!(%error, "cannot create kafka topics now");
    }
    let providers = providers(&config)?;
    let registry = registry::Registry::load(&pool, &providers).await?;
    let cache = if config.cache.enabled {
        Some(cache::Cache::new(
            codingagent_kernel::redis::connect(&config.redis)?,
            config.cache.ttl_secs,
            &metrics,
        ))
    } else {
        None
    };
    let breakers = providers
        .iter()
        .map(|p| {
            let breaker = breaker::Breaker::new(
                config.routing.breaker_failures,
                Duration::from_secs(config.routing.breaker_cool_down_secs),
            );
            (p.name().to_owned(), breaker)
        })
        .collect();
    let engine = Arc::new(engine::Engine {
        config: config.clone(),
        pool: pool.clone(),
        registry,
        providers,
        cache,
        breakers,
        hardware: hardware::Hardware::detect(),
    });

    let service = LlmServiceServer::new(grpc::Handlers { engine: engine.clone() })
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes);
    let served = ServiceHost::new("llm", &config.server, &config.identity, metrics)
        .add_service(service)
        .descriptor_set(codingagent_proto::FILE_DESCRIPTOR_SET)
        .check(db::check(pool.clone()))
        .outbox(&pool, &config.kafka)
        .consumer(&pool, &config.kafka, &config.task_outcomes_group, &[topics::TASK], outcomes::TaskOutcomes)
        .retention(&pool, &config.database)
        .background(Background::optional("registry-sync", move |stop| {
            let engine = engine.clone();
            async move {
                sync_registry(engine, stop).await;
                Ok(())
            }
        }))
        .serve(listener, shutdown)
        .await;
    pool.close().await;
    served.map_err(Into::into)
}

/// Refreshes the registry at start and then every `registry_sync_secs`.
async fn sync_registry(engine: Arc<engine::Engine>, stop: CancellationToken) {
    let every = Duration::from_secs(engine.config.routing.registry_sync_secs);
    let mut first = true;
    loop {
        if std::mem::take(&mut first) {
            pull_default_if_empty(&engine).await;
        }
        match engine.registry.sync(&engine.pool, &engine.providers).await {
            Ok(report) => {
                let models: usize = report.providers.iter().map(|p| p.model_count).sum();
                tracing::info!(models, "model registry synced");
            }
            Err(error) => tracing::warn!(%error, "model registry sync failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// On a fresh machine with `ollama.pull_default_on_start`, pulls the model the hardware
/// runs well, so the platform works without a manual `ollama pull`.
async fn pull_default_if_empty(engine: &engine::Engine) {
    use futures::StreamExt;
    let Some(config) = engine.config.ollama.as_ref().filter(|o| o.pull_default_on_start) else { return };
    let Some(ollama) = engine.provider("ollama") else { return };
    match ollama.list_models().await {
        Ok(models) if models.iter().all(|m| m.embedding) => {}
        _ => return, // a chat model exists, or Ollama is not reachable
    }
    let size = engine.hardware.recommended_size();
    let Some(model) = config.default_models.get(size.label()) else { return };
    tracing::info!(model, size = size.label(), "no local model yet; pulling the recommended one");
    match ollama.pull(model).await {
        Ok(mut progress) => {
            let mut last_percent = 0;
            while let Some(item) = progress.next().await {
                match item {
                    Ok(p) if p.total_bytes > 0 => {
                        let percent = p.completed_bytes * 100 / p.total_bytes;
                        if percent >= last_percent + 10 {
                            last_percent = percent;
                            tracing::info!(model, percent, "pulling");
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(model, %error, "pull failed");
                        return;
                    }
                }
            }
            tracing::info!(model, "pulled");
        }
        Err(error) => tracing::warn!(model, %error, "pull failed"),
    }
}
