//! The orchestration service: a coding request against a repository becomes a durable task
//! that is classified, given a strategy and a model, executed by a worker as checkpointed
//! steps — an agent proposing edits, git applying them, the tests running in a bubblewrap
//! sandbox — and finished with a validated change. State lives in PostgreSQL (tasks, runs,
//! steps, log lines, the change feed) and changes through one state machine together with
//! its outbox events; workers on any replica claim runs by lease and resume each other's
//! runs after a crash; streams on any replica follow every run through PostgreSQL
//! notifications.

mod access;
mod agent;
mod clients;
pub mod config;
mod convert;
mod engine;
pub mod error;
pub mod eval;
mod grpc;
mod lifecycle;
mod logs;
mod notify;
mod pipeline;
mod quota;
mod runs_api;
pub mod sandbox;
mod state;
mod store;
mod strategy;
mod tasks;
mod text;
mod validate;
mod watch;
mod worker;
mod workspace;

pub use config::Config;

use anyhow::Context;
use codingagent_kernel::config::ConfigArgs;
use codingagent_kernel::kafka::topics;
use codingagent_kernel::server::{Background, ServiceHost};
use codingagent_kernel::telemetry::metrics::Metrics;
use codingagent_kernel::{CancellationToken, db};
use codingagent_proto::codingagent::orchestration::v1::orchestration_service_server::OrchestrationServiceServer;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The service's own schema migrations (the kernel's run first); operator tools connect with them.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/orchestration");

/// Loads the configuration, sets up telemetry and serves until SIGINT/SIGTERM.
pub async fn run(args: ConfigArgs) -> anyhow::Result<()> {
    codingagent_kernel::service::run("orchestration", &args, serve).await
}

/// Serves the orchestration service on `listener` until `shutdown`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::for_service("orchestration");
    let pool = db::connect(&config.database, "orchestration", &MIGRATIONS).await.context("database")?;
    if let Err(error) = topics::ensure(&config.kafka, &[topics::TASK]).await {
        tracing::warn!(%error, "cannot create kafka topics now");
    }
    std::fs::create_dir_all(&config.worker.workspace_root).context("worker.workspace_root")?;
    let mut config = config;
    if config.sandbox.detect_toolchains && config.sandbox.toolchains.is_empty() {
        config.sandbox.toolchains = sandbox::detect_toolchains();
    }
    let engine = Arc::new(engine::Engine {
        clients: clients::Clients::new(&config).context("service clients")?,
        config: config.clone(),
        pool: pool.clone(),
        hub: notify::Hub::default(),
        worker_id: worker_id(),
    });
    // What operators watch: runs waiting and running, across every replica.
    let (queued, running) = (Gauge::<i64>::default(), Gauge::<i64>::default());
    metrics.register("orchestration_runs_queued", "Runs waiting for a worker", queued.clone());
    metrics.register("orchestration_runs_running", "Runs held by a worker", running.clone());
    let gauges_pool = pool.clone();
    let service = OrchestrationServiceServer::new(grpc::Handlers { engine: engine.clone() })
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes);
    let (listening, working, sweeping, purging) =
        (engine.clone(), engine.clone(), engine.clone(), engine.clone());
    let served = ServiceHost::new("orchestration", &config.server, &config.identity, metrics)
        .add_service(service)
        .descriptor_set(codingagent_proto::FILE_DESCRIPTOR_SET)
        .check(db::check(pool.clone()))
        .outbox(&pool, &config.kafka)
        .retention(&pool, &config.database)
        // Streams and idle workers on this replica hear of other replicas' writes through it.
        .background(Background::required("notifications", move |stop| {
            let engine = listening.clone();
            async move { engine.hub.run(&engine.pool, stop).await }
        }))
        .background(Background::required("workers", move |stop| {
            let engine = working.clone();
            async move { worker::run(engine, stop).await }
        }))
        .background(Background::periodic("pipeline-sweep", Duration::from_secs(5), move || {
            pipeline::sweep(sweeping.clone())
        }))
        .background(Background::periodic("run-gauges", Duration::from_secs(5), move || {
            run_gauges(gauges_pool.clone(), queued.clone(), running.clone())
        }))
        .background(Background::periodic(
            "purge",
            Duration::from_secs(config.purge_interval_secs),
            move || purge(purging.clone()),
        ))
        .serve(listener, shutdown)
        .await;
    pool.close().await;
    served.map_err(Into::into)
}

/// Purges deleted tasks past their retention (runs, steps and logs go with them) and the
/// change feed older than WatchTasks promises to keep.
async fn purge(engine: Arc<engine::Engine>) -> anyhow::Result<()> {
    let purged = store::tasks::purge(&engine.pool).await.context("task purge")?;
    let changes = store::tasks::purge_changes(&engine.pool, 48).await.context("change purge")?;
    if purged + changes > 0 {
        tracing::info!(purged, changes, "purged deleted tasks and old changes");
    }
    Ok(())
}

async fn run_gauges(pool: sqlx::PgPool, queued: Gauge<i64>, running: Gauge<i64>) -> anyhow::Result<()> {
    let (waiting, held): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state = 2) FROM runs WHERE state IN (1, 2)",
    )
    .fetch_one(&pool)
    .await?;
    queued.set(waiting);
    running.set(held);
    Ok(())
}

/// `host-pid-random`, so operators can tell workers apart and a restarted process is new.
fn worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..6])
}
