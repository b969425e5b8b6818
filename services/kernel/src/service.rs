//! How a service process starts: configuration (or `--dump-config`), telemetry, the listener,
//! and shutdown on SIGINT/SIGTERM, around the service's own `serve()`. Every service's `run`
//! is this with its name and `serve`, so the binaries behave alike.

use crate::config::{ConfigArgs, ServiceConfig, dump, load};
use crate::{CancellationToken, telemetry};
use anyhow::Context;
use tokio::net::TcpListener;

/// Loads `C`, prints it and returns for `--dump-config`; otherwise sets up telemetry, binds
/// the configured address and runs `serve` until the first SIGINT or SIGTERM.
pub async fn run<C, F, Fut>(name: &str, args: &ConfigArgs, serve: F) -> anyhow::Result<()>
where
    C: ServiceConfig,
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config: C = load(args)?;
    if args.dump_config {
        use std::io::Write;
        writeln!(std::io::stdout(), "{}", dump(&config)?)?;
        return Ok(());
    }
    let common = config.common();
    let (Some(server), Some(telemetry)) = (common.server, common.telemetry) else {
        anyhow::bail!("the {name} configuration has no server or telemetry section");
    };
    let _telemetry = telemetry::init(name, telemetry)?;
    let addr = server.listen_addr;
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "{name} listening");
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        trigger.cancel();
    });
    serve(config, listener, shutdown).await
}
