//! The task log: how lines are written (task-level lines inside a transaction, a run's lines
//! through a batching writer), StreamTaskLogs (replay from PostgreSQL, then the live tail on
//! any replica) and SearchTaskLogs.

use crate::access::{self, Action};
use crate::convert;
use crate::engine::Engine;
use crate::error::{OrchestrationError, Result, db_status};
use crate::notify;
use crate::store::logs::{self as store, NewLine};
use crate::store::tasks;
use codingagent_kernel::identity::Caller;
use codingagent_kernel::pagination;
use codingagent_kernel::validate::Violations;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use codingagent_proto::codingagent::orchestration::v1::stream_task_logs_response::Item;
use futures::Stream;
use sqlx::PgConnection;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// The longest line stored; longer output is split (the contract promises at most 16 KiB).
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024;

/// A line to write, built fluently: `Line::agent("…").warn()`.
#[derive(Debug, Clone)]
pub(crate) struct Line(NewLine);

impl Line {
    fn new(source: pb::LogSource, message: impl Into<String>) -> Self {
        Self(NewLine {
            level: pb::LogLevel::Info as i16,
            source: source as i16,
            run_id: None,
            step_id: None,
            message: message.into(),
            fields: None,
        })
    }

    pub(crate) fn orchestrator(message: impl Into<String>) -> Self {
        Self::new(pb::LogSource::Orchestrator, message)
    }

    pub(crate) fn agent(message: impl Into<String>) -> Self {
        Self::new(pb::LogSource::Agent, message)
    }

    pub(crate) fn sandbox(stderr: bool, message: impl Into<String>) -> Self {
        Self::new(if stderr { pb::LogSource::SandboxStderr } else { pb::LogSource::SandboxStdout }, message)
    }

    pub(crate) fn level(mut self, level: pb::LogLevel) -> Self {
        self.0.level = level as i16;
        self
    }

    pub(crate) fn debug(self) -> Self {
        self.level(pb::LogLevel::Debug)
    }

    pub(crate) fn warn(self) -> Self {
        self.level(pb::LogLevel::Warn)
    }

    pub(crate) fn error(self) -> Self {
        self.level(pb::LogLevel::Error)
    }

    pub(crate) fn fields(mut self, fields: serde_json::Value) -> Self {
        self.0.fields = Some(fields);
        self
    }

    pub(crate) fn at(mut self, run: Uuid, step: Option<Uuid>) -> Self {
        self.0.run_id = Some(run);
        self.0.step_id = step;
        self
    }

    /// The stored lines: control characters replaced (the text rule), split at
    /// [`MAX_LINE_BYTES`] on character boundaries.
    fn into_stored(self) -> Vec<NewLine> {
        let clean: String = self
            .0
            .message
            .chars()
            .map(|c| if c.is_control() && !matches!(c, '\t' | '\n') { '\u{fffd}' } else { c })
            .collect();
        let mut parts = Vec::new();
        let mut rest = clean.as_str();
        loop {
            if rest.len() <= MAX_LINE_BYTES {
                parts.push(rest.to_owned());
                break;
            }
            let part = crate::text::prefix(rest, MAX_LINE_BYTES);
            parts.push(part.to_owned());
            rest = &rest[part.len()..];
        }
        parts.into_iter().map(|message| NewLine { message, ..self.0.clone() }).collect()
    }
}

/// Appends lines to the task's log inside the caller's transaction.
pub(crate) async fn append(conn: &mut PgConnection, task: Uuid, lines: &[Line]) -> Result<i64, sqlx::Error> {
    let stored: Vec<NewLine> = lines.iter().cloned().flat_map(Line::into_stored).collect();
    store::append(conn, task, &stored).await
}

enum Command {
    Line(Line),
    Flush(oneshot::Sender<()>),
}

/// A run's log writer: lines are batched (up to 1,000 per transaction, or whatever arrived
/// within 20 ms) so a flood of test output costs a few statements, not one per line. The
/// bounded queue pushes back on a writer faster than PostgreSQL.
#[derive(Debug, Clone)]
pub(crate) struct RunLog {
    sender: mpsc::Sender<Command>,
    run: Uuid,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Line(_) => "Line",
            Command::Flush(_) => "Flush",
        })
    }
}

impl RunLog {
    pub(crate) fn start(pool: sqlx::PgPool, task: Uuid, run: Uuid) -> Self {
        let (sender, mut receiver) = mpsc::channel::<Command>(8_192);
        tokio::spawn(async move {
            let mut batch: Vec<NewLine> = Vec::new();
            let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
            loop {
                let Some(first) = receiver.recv().await else { break };
                let take = |command: Command,
                            batch: &mut Vec<NewLine>,
                            waiters: &mut Vec<oneshot::Sender<()>>| match command {
                    Command::Line(line) => batch.extend(line.into_stored()),
                    Command::Flush(done) => waiters.push(done),
                };
                take(first, &mut batch, &mut waiters);
                let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
                while batch.len() < 1_000 && waiters.is_empty() {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(command)) => take(command, &mut batch, &mut waiters),
                        _ => break,
                    }
                }
                let mut delay = Duration::from_millis(100);
                while !batch.is_empty() {
                    let written = async {
                        let mut tx = pool.begin().await?;
                        store::append(&mut tx, task, &batch).await?;
                        tx.commit().await
                    };
                    match written.await {
                        Ok(()) => batch.clear(),
                        Err(error) => {
                            tracing::warn!(%error, task_id = %task, "cannot write log lines; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                for done in waiters.drain(..) {
                    let _ = done.send(());
                }
            }
        });
        Self { sender, run }
    }

    /// Queues a line of step `step` (None for run-level lines).
    pub(crate) async fn write(&self, step: Option<Uuid>, line: Line) {
        let _ = self.sender.send(Command::Line(line.at(self.run, step))).await;
    }

    /// Queues a line from synchronous code (a model's streamed tokens); waits for room only
    /// in the rare case the queue is full.
    pub(crate) fn write_now(&self, step: Option<Uuid>, line: Line) {
        if let Err(mpsc::error::TrySendError::Full(command)) =
            self.sender.try_send(Command::Line(line.at(self.run, step)))
        {
            let sender = self.sender.clone();
            tokio::spawn(async move {
                let _ = sender.send(command).await;
            });
        }
    }

    /// Waits until everything queued so far is stored.
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

pub(crate) type LogStream =
    Pin<Box<dyn Stream<Item = Result<pb::StreamTaskLogsResponse, tonic::Status>> + Send>>;

const PAGE: i64 = 1_000;

pub(crate) async fn stream(
    engine: Arc<Engine>,
    caller: &Caller,
    request: pb::StreamTaskLogsRequest,
) -> Result<LogStream> {
    let mut v = Violations::default();
    let id = v.id("task_id", &request.task_id);
    if request.after_seq < 0 {
        v.add("after_seq", "must not be negative");
    }
    let min_level = match pb::LogLevel::try_from(request.min_level) {
        Ok(level) => level as i16,
        Err(_) => {
            v.add("min_level", "must be a LogLevel value");
            0
        }
    };
    v.finish()?;
    let id = id.unwrap_or_default();
    let task = {
        let mut conn = engine.pool.acquire().await?;
        access::find(&mut conn, caller, id, Action::Read, false).await?
    };
    if request.after_seq > task.last_log_seq {
        return Err(OrchestrationError::OutOfRange(format!(
            "after_seq {} is beyond the task's last line ({})",
            request.after_seq, task.last_log_seq
        )));
    }
    // Subscribed before the replay, so nothing written during it is missed.
    let mut notes = engine.hub.subscribe();
    let heartbeat = Duration::from_secs(engine.config.heartbeat_secs);
    let task_key = id.to_string();
    let stream = async_stream::try_stream! {
        let mut cursor = request.after_seq;
        let mut replayed = 0i64;
        loop {
            let rows = {
                let mut conn = engine.pool.acquire().await.map_err(db_status)?;
                store::after(&mut conn, id, cursor, min_level, PAGE).await.map_err(db_status)?
            };
            let full = rows.len() as i64 == PAGE;
            for row in &rows {
                cursor = row.seq;
                replayed += 1;
                yield pb::StreamTaskLogsResponse { seq: row.seq, item: Some(Item::Line(convert::line(row))) };
            }
            if !full { break; }
        }
        yield pb::StreamTaskLogsResponse {
            seq: cursor,
            item: Some(Item::ReplayComplete(pb::LogReplayComplete { replayed_lines: replayed })),
        };
        loop {
            // State first, then lines: lines committed before a terminal state are all read.
            let (state, rows) = {
                let mut conn = engine.pool.acquire().await.map_err(db_status)?;
                let Some(task) = tasks::get(&mut conn, id, false).await.map_err(db_status)? else {
                    Err(tonic::Status::from(OrchestrationError::not_found("task", id.to_string())))?;
                    return;
                };
                (task.state(), store::after(&mut conn, id, cursor, min_level, PAGE).await.map_err(db_status)?)
            };
            let more = rows.len() as i64 == PAGE;
            for row in &rows {
                cursor = row.seq;
                yield pb::StreamTaskLogsResponse { seq: row.seq, item: Some(Item::Line(convert::line(row))) };
            }
            if more { continue; }
            if request.replay_only || crate::state::is_terminal(state) {
                yield pb::StreamTaskLogsResponse {
                    seq: cursor,
                    item: Some(Item::End(pb::TaskLogsEnd { state: state as i32 })),
                };
                return;
            }
            if !notify::wait(&mut notes, notify::LOGS, &task_key, heartbeat).await {
                yield pb::StreamTaskLogsResponse {
                    seq: cursor,
                    item: Some(Item::Heartbeat(pb::Heartbeat { server_time: Some(codingagent_proto::helpers::now()) })),
                };
            }
        }
    };
    Ok(Box::pin(stream))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SearchCursor {
    rank: f32,
    seq: i64,
    query: String,
}

pub(crate) async fn search(
    engine: &Engine,
    caller: &Caller,
    request: pb::SearchTaskLogsRequest,
) -> Result<pb::SearchTaskLogsResponse> {
    let mut v = Violations::default();
    let id = v.id("task_id", &request.task_id);
    if request.query.trim().is_empty() {
        v.add("query", "must not be empty");
    } else {
        v.text("query", &request.query, 500);
    }
    v.finish()?;
    let limit = pagination::page_size(request.page_size, 20, 100)?;
    let cursor: Option<SearchCursor> = pagination::decode(&request.page_token)?;
    if cursor.as_ref().is_some_and(|c| c.query != request.query) {
        return Err(OrchestrationError::invalid("page_token", "belongs to a different query"));
    }
    let mut conn = engine.pool.acquire().await?;
    let task = access::find(&mut conn, caller, id.unwrap_or_default(), Action::Read, false).await?;
    let rows =
        store::search(&mut conn, task.id, &request.query, cursor.map(|c| (c.rank, c.seq)), limit + 1).await?;
    let (rows, next_page_token) = pagination::page(rows, limit, |r| SearchCursor {
        rank: r.rank,
        seq: r.line.seq,
        query: request.query.clone(),
    });
    let hits = rows
        .iter()
        .map(|r| pb::LogSearchHit { line: Some(convert::line(&r.line)), snippet: r.snippet.clone() })
        .collect();
    Ok(pb::SearchTaskLogsResponse { hits, next_page_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_lines_obey_the_text_rule_and_the_size_limit() {
        let parts =
            Line::sandbox(false, format!("a\0b\u{1b}[31m{}", "x".repeat(MAX_LINE_BYTES))).into_stored();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.message.len() <= MAX_LINE_BYTES));
        assert!(parts[0].message.starts_with("a\u{fffd}b\u{fffd}[31m"));
        assert!(parts.iter().all(|p| codingagent_kernel::validate::text("m", &p.message).is_ok()));
        assert_eq!(parts.iter().map(|p| p.message.chars().count()).sum::<usize>(), 8 + MAX_LINE_BYTES);
    }
}
