//! The shared runtime of every CodingAgent service.
//!
//! Each service is a library with one `serve()` function built from these parts, so that
//! the per-service binaries and the all-in-one `codingagent` binary run identical code:
//! layered configuration ([`config`]), logs/traces/metrics ([`telemetry`]), the gRPC server
//! skeleton with health, reflection, limits and ordered shutdown ([`server`]), error statuses
//! clients can act on ([`error`]), internal identity tokens ([`identity`]), PostgreSQL with
//! per-service schemas ([`db`]), Redis ([`redis`]), Kafka events through a transactional
//! outbox and an idempotent inbox ([`kafka`]), and the process start-up around `serve()`
//! ([`service`]).

pub mod config;
pub mod db;
pub mod error;
pub mod http_status;
pub mod idempotency;
pub mod identity;
pub mod kafka;
pub mod pagination;
pub mod redis;
pub mod retention;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod validate;

pub use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGINT or SIGTERM; a second signal exits the process at once, for
/// when a graceful shutdown hangs.
pub async fn shutdown_signal() {
    let first = wait_for_signal().await;
    tracing::info!(signal = first, "shutdown requested; a second signal exits immediately");
    tokio::spawn(async {
        let second = wait_for_signal().await;
        tracing::warn!(signal = second, "second signal; exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() -> &'static str {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
        "SIGTERM"
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<&'static str>();
    tokio::select! {
        signal = ctrl_c => signal,
        signal = terminate => signal,
    }
}
