//! One PostgreSQL LISTEN connection per instance, fanned out to every stream and worker here.
//! Writers NOTIFY in their own transaction, so a notification arrives only for committed
//! rows, on every replica. Notifications are hints: receivers always re-read PostgreSQL, and
//! poll on a timer as well, so a dropped listener connection delays them but loses nothing.

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio::sync::broadcast;

pub(crate) const LOGS: &str = "orchestration_logs";
pub(crate) const TASKS: &str = "orchestration_tasks";
pub(crate) const RUNS: &str = "orchestration_runs";
pub(crate) const CANCEL: &str = "orchestration_cancel";

/// A notification: its channel and payload (a task or run id).
#[derive(Debug, Clone)]
pub(crate) struct Note {
    pub channel: &'static str,
    pub payload: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Hub {
    sender: broadcast::Sender<Note>,
}

impl Default for Hub {
    fn default() -> Self {
        Self { sender: broadcast::channel(4_096).0 }
    }
}

impl Hub {
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Note> {
        self.sender.subscribe()
    }

    /// Listens until `stop`; returns an error when the connection fails (the supervisor
    /// restarts it with backoff).
    pub(crate) async fn run(
        &self,
        pool: &PgPool,
        stop: codingagent_kernel::CancellationToken,
    ) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen_all([LOGS, TASKS, RUNS, CANCEL]).await?;
        loop {
            let notification = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                n = listener.try_recv() => n?,
            };
            let Some(notification) = notification else {
                // The connection was lost and re-established: something may have been missed,
                // so every receiver re-reads.
                let _ = self.sender.send(Note { channel: "", payload: String::new() });
                continue;
            };
            let channel = match notification.channel() {
                LOGS => LOGS,
                TASKS => TASKS,
                RUNS => RUNS,
                CANCEL => CANCEL,
                _ => continue,
            };
            let _ = self.sender.send(Note { channel, payload: notification.payload().to_owned() });
        }
    }
}

/// Waits for a note on `channel` about `payload` (any payload when empty), a lost-listener
/// note, or `poll` — whichever comes first; `false` when `poll` ran out. A lagged receiver
/// counts as a wake-up.
pub(crate) async fn wait(
    receiver: &mut broadcast::Receiver<Note>,
    channel: &str,
    payload: &str,
    poll: Duration,
) -> bool {
    let wanted = async {
        loop {
            match receiver.recv().await {
                Ok(note) if note.channel.is_empty() => return,
                Ok(note) if note.channel == channel && (payload.is_empty() || note.payload == payload) => {
                    return;
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    };
    tokio::time::timeout(poll, wanted).await.is_ok()
}
