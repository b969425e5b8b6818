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
use codingagent_kernel::kafka::topics;
use codingagent_kernel::server::{Background, ServiceHost};
use codingagent_kernel::telemetry::metrics::Metrics;
use codingagent_kernel::{CancellationToken, db};
use codingagent_proto::codingagent::chat::v1::chat_service_server::ChatServiceServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The service's own schema migrations (the kernel's run first); operator tools connect with them.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/chat");

/// Loads the configuration, sets up telemetry and serves until SIGINT/SIGTERM.
pub async fn run(args: ConfigArgs) -> anyhow::Result<()> {
    codingagent_kernel::service::run("chat", &args, serve).await
}

/// Serves the chat service on `listener` until `shutdown`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::for_service("chat");
    let pool = db::connect(&config.database, "chat", &MIGRATIONS).await.context("database")?;
    if let Err(error) = topics::ensure(&config.kafka, &[topics::CHAT]).await {
        tracing::warn!(%error, "cannot create kafka topics now");
    }
    let redis = codingagent_kernel::redis::connect(&config.redis)?;
    let redis_config = config.redis.clone();
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

    let routes = http::routes(engine.clone());
    let service = ChatServiceServer::new(grpc::Handlers { engine: engine.clone() })
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes);
    let purger = engine.clone();
    let served = ServiceHost::new("chat", &config.server, &config.identity, metrics)
        .add_service(service)
        .descriptor_set(codingagent_proto::FILE_DESCRIPTOR_SET)
        .http_routes(routes)
        .check(db::check(pool.clone()))
        .outbox(&pool, &config.kafka)
        .retention(&pool, &config.database)
        // Streams on other replicas hear of events only through the fan-out.
        .background(Background::required("fanout", move |stop| {
            let (fanout, redis) = (fanout.clone(), redis_config.clone());
            async move {
                let subscriber = codingagent_kernel::redis::subscriber(&redis)?;
                fanout.run(subscriber, stop).await;
                Ok(())
            }
        }))
        .background(Background::optional("recent-messages-cache", move |stop| {
            let cache = cache.clone();
            async move {
                cache.run(stop).await;
                Ok(())
            }
        }))
        .background(Background::periodic(
            "purge",
            Duration::from_secs(config.purge_interval_secs),
            move || purge(purger.clone()),
        ))
        .serve(listener, shutdown)
        .await;
    pool.close().await;
    served.map_err(Into::into)
}

/// Purges conversations past their retention (their attachments first) and uploads never
/// posted; the kernel's retention job handles retry records.
async fn purge(engine: Arc<engine::Engine>) -> anyhow::Result<()> {
    let keys = attachments::purge(&engine.pool, engine.attachments.unattached_ttl_hours)
        .await
        .context("attachment purge")?;
    engine.attachments.delete_objects(&keys).await;
    let purged = store::purge(&engine.pool).await.context("conversation purge")?;
    if purged > 0 {
        tracing::info!(purged, "purged deleted conversations");
    }
    Ok(())
}
