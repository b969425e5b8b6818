//! The chat service: conversations between users and the assistant, where coding requests
//! are typed and discussed. Messages live in PostgreSQL with a per-conversation sequence and
//! a durable event log, so a stream can always replay exactly what it missed; Redis carries
//! the live fan-out between replicas, typing and presence, and a cache of each
//! conversation's newest messages — all of which degrade to slower, never to wrong, when
//! Redis is down. Durable changes go to Kafka through the outbox.

mod access;
mod attachments;
mod cache;
pub mod config;
mod conversations;
mod convert;
mod engine;
pub mod error;
mod fanout;
mod grpc;
mod http;
pub mod http_status;
mod messages;
mod presence;
mod search;
mod store;
mod stream;
mod upload;
mod validate;

pub use config::Config;

use anyhow::Context;
use codingagent_kernel::config::ConfigArgs;
use codingagent_kernel::kafka::{Relay, topics};
use codingagent_kernel::server::ServiceHost;
use codingagent_kernel::telemetry::metrics::Metrics;
use codingagent_kernel::{CancellationToken, db};
use codingagent_proto::codingagent::chat::v1::chat_service_server::ChatServiceServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/chat");

/// Loads the configuration, sets up telemetry and serves until SIGINT/SIGTERM.
pub async fn run(args: ConfigArgs) -> anyhow::Result<()> {
    codingagent_kernel::service::run("chat", &args, serve).await
}

/// Serves the chat service on `listener` until `shutdown`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let pool = db::connect(&config.database, "chat", &MIGRATIONS).await.context("database")?;
    if let Err(error) = topics::ensure(&config.kafka, &[topics::CHAT]).await {
        tracing::warn!(%error, "cannot create kafka topics now");
    }
    let redis = codingagent_kernel::redis::connect(&config.redis)?;
    let subscriber = codingagent_kernel::redis::subscriber(&config.redis)?;
    let fanout = fanout::Fanout::new(redis.clone());
    let cache =
        cache::RecentMessages::new(redis.clone(), config.cached_messages, config.cache_ttl_secs, &metrics);
    let presence = presence::Presence::new(redis.clone(), Duration::from_secs(config.presence_ttl_secs));
    let attachments = attachments::Attachments::new(&config.attachments).context("attachment storage")?;
    let engine = Arc::new(engine::Engine {
        config: config.clone(),
        pool: pool.clone(),
        fanout: fanout.clone(),
        cache: cache.clone(),
        presence,
        attachments,
    });

    let background = CancellationToken::new();
    let fan = tokio::spawn(fanout.run(subscriber, background.clone()));
    let cached = tokio::spawn(cache.run(background.clone()));
    let purge = tokio::spawn(purge(engine.clone(), background.clone()));
    let relay = Relay::new(pool.clone(), &config.kafka, "chat")?.with_metrics(&metrics);
    let relay = tokio::spawn(relay.run(background.clone()));

    let routes = http::routes(engine.clone());
    let service = ChatServiceServer::new(grpc::Handlers { engine })
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes);
    let served = ServiceHost::new(&config.server, &config.identity, metrics)
        .add_service(service)
        .descriptor_set(codingagent_proto::FILE_DESCRIPTOR_SET)
        .http_routes(routes)
        .check(db::check(pool.clone()))
        .serve(listener, shutdown)
        .await;
    background.cancel();
    let _ = tokio::join!(fan, cached, purge, relay);
    pool.close().await;
    served.map_err(Into::into)
}

/// Purges conversations past their retention (their attachments first), uploads never
/// posted, and retry records past their retention.
async fn purge(engine: Arc<engine::Engine>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(engine.config.purge_interval_secs));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                match attachments::purge(&engine.pool, engine.attachments.unattached_ttl_hours).await {
                    Ok(keys) => engine.attachments.delete_objects(&keys).await,
                    Err(error) => tracing::warn!(%error, "attachment purge failed"),
                }
                match store::purge(&engine.pool).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "purged deleted conversations"),
                    Err(error) => tracing::warn!(%error, "conversation purge failed"),
                }
                if let Err(error) = codingagent_kernel::idempotency::purge(&engine.pool, codingagent_kernel::idempotency::RETENTION).await {
                    tracing::warn!(%error, "idempotency purge failed");
                }
            }
        }
    }
}
