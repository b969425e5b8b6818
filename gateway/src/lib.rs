//! The gateway: the one door every client uses. Browsers speak grpc-web (HTTP/1.1 or
//! HTTP/2, binary or text), grpcurl and SDKs speak native gRPC, and GitHub posts webhooks —
//! all on one port. The gateway verifies external JWTs and forwards an internal identity
//! token minted per call, applies CORS and rate limits, answers health and reflection for
//! every contract itself, routes each call by protobuf package to a pool of backend
//! endpoints (health-watched, balanced by the power of two choices, behind circuit
//! breakers), propagates deadlines and trace context, retries only what the contracts mark
//! idempotent, splits traffic between deployments for gradual cut-overs, and serves the
//! built dashboard.
//!
//! Requests flow `server` (connections, CORS, dispatch) → `proxy` (one gRPC call) or
//! `http` (plain routes) or `local` (health, reflection), with `auth`, `ratelimit`,
//! `pool`, `split`, `deadline` and `retry` as the steps a call takes.

pub mod auth;
mod breaker;
mod callbody;
pub mod config;
pub mod contracts;
pub mod deadline;
pub mod grpcweb;
mod http;
mod local;
mod metrics;
mod pool;
mod proxy;
mod ratelimit;
mod reload;
mod retry;
mod server;
pub mod split;
mod state;
mod staticfiles;
mod trace;

pub use config::Config;

use codingagent_kernel::CancellationToken;
use codingagent_kernel::config::{ConfigArgs, ServiceConfig, dump, load};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Loads the configuration, sets up telemetry and serves until SIGINT/SIGTERM; routes are
/// reloaded from the same layers while it runs.
pub async fn run(args: ConfigArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let config: Config = load(&args)?;
    if args.dump_config {
        use std::io::Write;
        writeln!(std::io::stdout(), "{}", dump(&config)?)?;
        return Ok(());
    }
    let _telemetry = codingagent_kernel::telemetry::init("gateway", &config.telemetry)?;
    let addr = config.server.listen_addr;
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        codingagent_kernel::shutdown_signal().await;
        trigger.cancel();
    });
    serve(config, Some(args), listener, shutdown).await
}

/// Serves on `listener` until `shutdown`. With `reload`, the routes follow changes to the
/// configuration those arguments load.
pub async fn serve(
    config: Config,
    reload: Option<ConfigArgs>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.common().validate()?;
    config.validate()?;
    let redis = if config.rate_limits.enabled {
        Some(codingagent_kernel::redis::connect(&config.redis)?)
    } else {
        None
    };
    let grace = config.server.shutdown_grace();
    let drain = Duration::from_millis(config.server.shutdown_drain_delay_ms);
    // Streams end and readiness turns off on this; the listener closes after the drain delay.
    let stopping = CancellationToken::new();
    let gateway = Arc::new(state::Gateway::new(config, redis, stopping.clone())?);
    let local = local::Local::new()?;
    let background = CancellationToken::new();
    let mut tasks = Vec::new();
    for pool in gateway.pools.values() {
        tasks.extend(pool.watch_health(background.clone()));
    }
    tasks.push(tokio::spawn(gateway.auth.clone().refresh_all(background.clone())));
    tasks.push(tokio::spawn(local.clone().report(gateway.clone())));
    if let Some(args) = reload {
        tasks.push(tokio::spawn(reload::watch(gateway.clone(), args, background.clone())));
    }
    let stop_accepting = CancellationToken::new();
    let server = tokio::spawn(server::run(gateway.clone(), local, listener, stop_accepting.clone(), grace));
    shutdown.cancelled().await;
    tracing::info!("gateway shutting down: not ready, streams ending");
    stopping.cancel();
    tokio::time::sleep(drain).await;
    stop_accepting.cancel();
    let served = server.await.map_err(|e| anyhow::anyhow!("gateway server task: {e}")).and_then(|r| r);
    background.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    served
}
