//! The orchestration service's shared state.

use crate::clients::Clients;
use crate::config::Config;
use crate::notify::Hub;
use sqlx::PgPool;

#[derive(Debug)]
pub(crate) struct Engine {
    pub config: Config,
    pub pool: PgPool,
    pub clients: Clients,
    /// PostgreSQL notifications (new log lines, task changes, queued runs, cancellations),
    /// so streams and workers on every replica hear of them within milliseconds.
    pub hub: Hub,
    /// This instance's worker id (host, process and a random part).
    pub worker_id: String,
}
