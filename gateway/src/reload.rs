//! Routes and traffic splits change without a restart: the configuration is loaded again
//! (file, environment and `--set` layers alike) whenever the file's modification time or
//! size changes, and its `[services]` table replaces the one in force if it validates
//! against the backends the gateway started with. A bad edit is logged and ignored, so a
//! typo cannot take routing down; new backends need a restart.

use crate::config::{Config, validate_services};
use crate::state::Gateway;
use codingagent_kernel::config::{ConfigArgs, load};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Watches `args.file` until `stop`.
pub(crate) async fn watch(gateway: Arc<Gateway>, args: ConfigArgs, stop: CancellationToken) {
    let Some(file) = args.file.clone() else { return };
    let stamp = |file: &std::path::Path| -> Option<(SystemTime, u64)> {
        let metadata = std::fs::metadata(file).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    };
    let mut last = stamp(&file);
    let interval = Duration::from_millis(gateway.config.reload_interval_ms);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let now = stamp(&file);
        if now == last {
            continue;
        }
        last = now;
        match load::<Config>(&args) {
            Ok(config) => match validate_services(&config.services, &gateway.config.backends) {
                Ok(()) => {
                    if gateway.set_routes(config.services) {
                        tracing::info!(file = %file.display(), "routes reloaded");
                    }
                }
                Err(error) => tracing::warn!(%error, "reloaded routes refused; keeping the current ones"),
            },
            Err(error) => tracing::warn!(%error, "configuration reload failed; keeping the current routes"),
        }
    }
}
