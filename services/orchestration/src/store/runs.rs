//! Runs (with their leases) and steps (with their checkpoints).

use super::tasks::Budget;
use chrono::{DateTime, Utc};
use codingagent_proto::codingagent::orchestration::v1 as pb;
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RunRow {
    pub id: Uuid,
    pub task_id: Uuid,
    pub attempt: i32,
    pub state: i16,
    pub strategy: i16,
    pub model: String,
    pub max_tokens: i64,
    pub max_iterations: i32,
    pub max_wall_secs: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub iterations: i32,
    pub failure: Option<Vec<u8>>,
    pub resume_from: Option<Uuid>,
    pub worker_id: String,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub resume_count: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl RunRow {
    pub(crate) fn budget(&self) -> Budget {
        Budget { tokens: self.max_tokens, iterations: self.max_iterations, wall_secs: self.max_wall_secs }
    }

    pub(crate) fn failure(&self) -> Option<pb::TaskFailure> {
        self.failure.as_deref().and_then(|b| pb::TaskFailure::decode(b).ok())
    }
}

const COLUMNS: &str = "id, task_id, owner, attempt, state, strategy, model, max_tokens, max_iterations, \
    max_wall_secs, input_tokens, output_tokens, iterations, failure, resume_from, worker_id, \
    lease_expires_at, resume_count, cancel_requested, created_at, updated_at, started_at, ended_at";

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert(
    conn: &mut PgConnection,
    task_id: Uuid,
    owner: &str,
    attempt: i32,
    strategy: i16,
    model: &str,
    budget: Budget,
    resume_from: Option<Uuid>,
) -> Result<RunRow, sqlx::Error> {
    let run: RunRow = sqlx::query_as(&format!(
        "INSERT INTO runs (id, task_id, owner, attempt, state, strategy, model, max_tokens, max_iterations, \
         max_wall_secs, resume_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(task_id)
    .bind(owner)
    .bind(attempt)
    .bind(pb::RunState::Queued as i16)
    .bind(strategy)
    .bind(model)
    .bind(budget.tokens)
    .bind(budget.iterations)
    .bind(budget.wall_secs)
    .bind(resume_from)
    .fetch_one(&mut *conn)
    .await?;
    // Idle workers wake at once instead of at their next poll.
    sqlx::query("SELECT pg_notify('orchestration_runs', $1)").bind(run.id.to_string()).execute(conn).await?;
    Ok(run)
}

pub(crate) async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM runs WHERE id = $1")).bind(id).fetch_optional(conn).await
}

pub(crate) async fn list(
    conn: &mut PgConnection,
    task_id: Uuid,
    before_attempt: Option<i32>,
    limit: i64,
) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM runs WHERE task_id = $1 AND ($2::int IS NULL OR attempt < $2) \
         ORDER BY attempt DESC LIMIT $3"
    ))
    .bind(task_id)
    .bind(before_attempt)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Inside a transaction: claims the oldest claimable run for `worker` — a queued one, or a
/// running one whose lease lapsed (its worker died). Owners already at their concurrency
/// limit wait. Returns the run and whether it is a resumption.
pub(crate) async fn claim(
    conn: &mut PgConnection,
    worker: &str,
    lease_secs: u64,
    concurrent_limit: i64,
) -> Result<Option<(RunRow, bool)>, sqlx::Error> {
    let candidate: Option<(Uuid, i16)> = sqlx::query_as(
        "SELECT r.id, r.state FROM runs r \
         WHERE (r.state = 1 OR (r.state = 2 AND r.lease_expires_at < now())) \
         AND ($1 = 0 OR r.state = 2 OR (SELECT count(*) FROM runs o WHERE o.owner = r.owner AND o.state = 2 \
              AND o.lease_expires_at >= now()) < $1) \
         ORDER BY r.created_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(concurrent_limit)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, prior)) = candidate else { return Ok(None) };
    let resumed = prior == pb::RunState::Running as i16;
    let run = sqlx::query_as(&format!(
        "UPDATE runs SET state = 2, worker_id = $2, lease_expires_at = now() + make_interval(secs => $3), \
         started_at = coalesce(started_at, now()), updated_at = now(), resume_count = resume_count + $4 \
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(worker)
    .bind(lease_secs as f64)
    .bind(i32::from(resumed))
    .fetch_one(conn)
    .await?;
    Ok(Some((run, resumed)))
}

/// Extends the lease; `false` when the run is no longer this worker's (it lapsed and was
/// claimed by another, or ended) — the worker must stop at once.
pub(crate) async fn renew(
    pool: &sqlx::PgPool,
    run: Uuid,
    worker: &str,
    lease_secs: u64,
) -> Result<(bool, bool), sqlx::Error> {
    let row: Option<(bool,)> = sqlx::query_as(
        "UPDATE runs SET lease_expires_at = now() + make_interval(secs => $3) \
         WHERE id = $1 AND worker_id = $2 AND state = 2 RETURNING cancel_requested",
    )
    .bind(run)
    .bind(worker)
    .bind(lease_secs as f64)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((cancel,)) => (true, cancel),
        None => (false, false),
    })
}

/// Ends the run (held by `worker`, when given).
pub(crate) async fn finish(
    conn: &mut PgConnection,
    run: Uuid,
    state: pb::RunState,
    failure: Option<&pb::TaskFailure>,
) -> Result<RunRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE runs SET state = $2, failure = $3, ended_at = now(), updated_at = now(), lease_expires_at = NULL \
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(run)
    .bind(state as i16)
    .bind(failure.map(Message::encode_to_vec))
    .fetch_one(conn)
    .await
}

/// Asks the worker holding the run to stop (it checks at every lease renewal and NOTIFY).
pub(crate) async fn request_cancel(conn: &mut PgConnection, run: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE runs SET cancel_requested = true WHERE id = $1")
        .bind(run)
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_notify('orchestration_cancel', $1)").bind(run.to_string()).execute(conn).await?;
    Ok(())
}

/// Adds a step's use to the run.
pub(crate) async fn add_usage(
    conn: &mut PgConnection,
    run: Uuid,
    input_tokens: i64,
    output_tokens: i64,
    iterations: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE runs SET input_tokens = input_tokens + $2, output_tokens = output_tokens + $3, \
         iterations = iterations + $4, updated_at = now() WHERE id = $1",
    )
    .bind(run)
    .bind(input_tokens)
    .bind(output_tokens)
    .bind(iterations)
    .execute(conn)
    .await
    .map(drop)
}

/// What a task's runs used so far, for RetryTask's check against the total.
pub(crate) async fn used(conn: &mut PgConnection, task_id: Uuid) -> Result<Budget, sqlx::Error> {
    let (tokens, iterations, wall): (i64, i64, f64) = sqlx::query_as(
        "SELECT coalesce(sum(input_tokens + output_tokens), 0)::bigint, coalesce(sum(iterations), 0)::bigint, \
         coalesce(sum(extract(epoch FROM coalesce(ended_at, now()) - coalesce(started_at, coalesce(ended_at, now())))), 0)::float8 \
         FROM runs WHERE task_id = $1",
    )
    .bind(task_id)
    .fetch_one(conn)
    .await?;
    Ok(Budget { tokens, iterations: iterations as i32, wall_secs: wall.ceil() as i64 })
}

/// Runs of the owner executing now, and tokens used by their runs this month (UTC).
pub(crate) async fn owner_usage(conn: &mut PgConnection, owner: &str) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 2 AND lease_expires_at >= now()), \
         coalesce(sum(input_tokens + output_tokens) FILTER (WHERE created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0)::bigint \
         FROM runs WHERE owner = $1",
    )
    .bind(owner)
    .fetch_one(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct StepRow {
    pub id: Uuid,
    pub run_id: Uuid,
    pub index: i32,
    pub kind: i16,
    pub state: i16,
    pub iteration: i32,
    pub summary: String,
    pub error_message: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub checkpoint: Option<serde_json::Value>,
    pub commit_sha: String,
    pub first_log_seq: i64,
    pub last_log_seq: i64,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

const STEP_COLUMNS: &str = "id, run_id, index, kind, state, iteration, summary, error_message, input_tokens, \
    output_tokens, checkpoint, commit_sha, first_log_seq, last_log_seq, started_at, ended_at";

pub(crate) async fn steps(conn: &mut PgConnection, run: Uuid) -> Result<Vec<StepRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {STEP_COLUMNS} FROM steps WHERE run_id = $1 ORDER BY index"))
        .bind(run)
        .fetch_all(conn)
        .await
}

/// The newest completed step's checkpoint of `run`.
pub(crate) async fn last_checkpoint(
    conn: &mut PgConnection,
    run: Uuid,
) -> Result<Option<(i32, serde_json::Value)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT index, checkpoint FROM steps WHERE run_id = $1 AND checkpoint IS NOT NULL \
         ORDER BY index DESC LIMIT 1",
    )
    .bind(run)
    .fetch_optional(conn)
    .await
}

/// Marks steps left running by a dead worker as interrupted (a resumed run repeats them).
pub(crate) async fn interrupt_running(conn: &mut PgConnection, run: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("UPDATE steps SET state = 5, ended_at = now() WHERE run_id = $1 AND state = 1")
        .bind(run)
        .execute(conn)
        .await?
        .rows_affected())
}

pub(crate) async fn start_step(
    conn: &mut PgConnection,
    run: Uuid,
    kind: pb::StepKind,
    iteration: i32,
) -> Result<StepRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO steps (id, run_id, index, kind, state, iteration) \
         VALUES ($1, $2, (SELECT coalesce(max(index) + 1, 0) FROM steps WHERE run_id = $2), $3, 1, $4) \
         RETURNING {STEP_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(run)
    .bind(kind as i16)
    .bind(iteration)
    .fetch_one(conn)
    .await
}

/// Ends a step and, for a completed one, stores the run's progress as its checkpoint — in
/// the same transaction as everything the step's completion changes.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn end_step(
    conn: &mut PgConnection,
    step: Uuid,
    state: pb::StepState,
    summary: &str,
    error: &str,
    tokens: (i64, i64),
    checkpoint: Option<&serde_json::Value>,
    commit_sha: &str,
    logs: (i64, i64),
) -> Result<StepRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE steps SET state = $2, summary = $3, error_message = $4, input_tokens = $5, output_tokens = $6, \
         checkpoint = $7, commit_sha = $8, first_log_seq = $9, last_log_seq = $10, ended_at = now() \
         WHERE id = $1 RETURNING {STEP_COLUMNS}"
    ))
    .bind(step)
    .bind(state as i16)
    .bind(summary)
    .bind(error)
    .bind(tokens.0)
    .bind(tokens.1)
    .bind(checkpoint)
    .bind(commit_sha)
    .bind(logs.0)
    .bind(logs.1)
    .fetch_one(conn)
    .await
}
