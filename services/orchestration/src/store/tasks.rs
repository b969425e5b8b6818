//! Tasks and their change feed (`task_changes`, which WatchTasks replays).

use chrono::{DateTime, Utc};
use codingagent_proto::codingagent::orchestration::v1 as pb;
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

/// One `tasks` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct TaskRow {
    pub id: Uuid,
    pub owner: String,
    pub title: String,
    pub text: String,
    pub labels: Vec<String>,
    pub repo_kind: i16,
    pub repo_location: String,
    pub base_branch: String,
    pub test_command: String,
    pub requested_strategy: i16,
    pub requested_model: String,
    pub strategy: i16,
    pub model: String,
    pub max_tokens: i64,
    pub max_iterations: i32,
    pub max_wall_secs: i64,
    pub total_tokens: i64,
    pub total_iterations: i32,
    pub total_wall_secs: i64,
    pub state: i16,
    pub classification: Option<Vec<u8>>,
    pub ab_test_id: String,
    pub ab_variant_id: String,
    pub origin: Vec<u8>,
    pub failure: Option<Vec<u8>>,
    pub pull_request_url: String,
    pub pull_request_id: String,
    pub current_run_id: Option<Uuid>,
    pub run_count: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub iterations: i32,
    pub cost_micros: i64,
    pub last_log_seq: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl TaskRow {
    pub(crate) fn state(&self) -> pb::TaskState {
        pb::TaskState::try_from(i32::from(self.state)).unwrap_or(pb::TaskState::Unspecified)
    }

    pub(crate) fn classification(&self) -> Option<pb::TaskClassification> {
        self.classification.as_deref().and_then(|b| pb::TaskClassification::decode(b).ok())
    }
}

/// What CreateTask stores.
#[derive(Debug, Clone)]
pub(crate) struct NewTask {
    pub id: Uuid,
    pub owner: String,
    pub title: String,
    pub text: String,
    pub labels: Vec<String>,
    pub repo_kind: i16,
    pub repo_location: String,
    pub base_branch: String,
    pub test_command: String,
    pub requested_strategy: i16,
    pub requested_model: String,
    pub budget: Budget,
    pub total: Budget,
    pub origin: pb::TaskOrigin,
}

/// Tokens, iterations and wall seconds: a run's budget or a task's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Budget {
    pub tokens: i64,
    pub iterations: i32,
    pub wall_secs: i64,
}

const COLUMNS: &str = "id, owner, title, text, labels, repo_kind, repo_location, base_branch, test_command, \
    requested_strategy, requested_model, strategy, model, max_tokens, max_iterations, max_wall_secs, \
    total_tokens, total_iterations, total_wall_secs, state, classification, ab_test_id, ab_variant_id, \
    origin, failure, pull_request_url, pull_request_id, current_run_id, run_count, input_tokens, \
    output_tokens, iterations, cost_micros, last_log_seq, created_at, updated_at, \
    started_at, ended_at";

pub(crate) async fn insert(conn: &mut PgConnection, task: &NewTask) -> Result<TaskRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO tasks (id, owner, title, text, labels, repo_kind, repo_location, base_branch, \
         test_command, requested_strategy, requested_model, strategy, model, max_tokens, max_iterations, \
         max_wall_secs, total_tokens, total_iterations, total_wall_secs, state, origin) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
         RETURNING {COLUMNS}"
    ))
    .bind(task.id)
    .bind(&task.owner)
    .bind(&task.title)
    .bind(&task.text)
    .bind(&task.labels)
    .bind(task.repo_kind)
    .bind(&task.repo_location)
    .bind(&task.base_branch)
    .bind(&task.test_command)
    .bind(task.requested_strategy)
    .bind(&task.requested_model)
    .bind(task.budget.tokens)
    .bind(task.budget.iterations)
    .bind(task.budget.wall_secs)
    .bind(task.total.tokens)
    .bind(task.total.iterations)
    .bind(task.total.wall_secs)
    .bind(pb::TaskState::Pending as i16)
    .bind(task.origin.encode_to_vec())
    .fetch_one(conn)
    .await
}

/// A live (not deleted) task; `lock` takes its row lock, as every change must.
pub(crate) async fn get(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<TaskRow>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1 AND deleted_at IS NULL{lock}"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// ListTasks' filters, already validated.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    /// `None` lists every owner (operators).
    pub owner: Option<String>,
    pub states: Vec<i16>,
    pub repository: Option<String>,
    pub label: Option<String>,
    pub after: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
}

/// Newest first, keyset-paged after `(created_at, id)`.
pub(crate) async fn list(
    conn: &mut PgConnection,
    filter: &Filter,
    cursor: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    let (cursor_time, cursor_id) = cursor.unzip();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE deleted_at IS NULL \
         AND ($1::text IS NULL OR owner = $1) \
         AND (cardinality($2::smallint[]) = 0 OR state = ANY($2)) \
         AND ($3::text IS NULL OR repo_location = $3) \
         AND ($4::text IS NULL OR $4 = ANY(labels)) \
         AND ($5::timestamptz IS NULL OR created_at >= $5) \
         AND ($6::timestamptz IS NULL OR created_at < $6) \
         AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8)) \
         ORDER BY created_at DESC, id DESC LIMIT $9"
    ))
    .bind(&filter.owner)
    .bind(&filter.states)
    .bind(&filter.repository)
    .bind(&filter.label)
    .bind(filter.after)
    .bind(filter.before)
    .bind(cursor_time)
    .bind(cursor_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Title, text and labels (UpdateTask).
pub(crate) async fn update_fields(
    conn: &mut PgConnection,
    id: Uuid,
    title: &str,
    text: &str,
    labels: &[String],
) -> Result<TaskRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE tasks SET title = $2, text = $3, labels = $4, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(title)
    .bind(text)
    .bind(labels)
    .fetch_one(conn)
    .await
}

/// Soft delete; the purge job removes it (and, by cascade, its runs, steps and logs) later.
pub(crate) async fn soft_delete(
    conn: &mut PgConnection,
    id: Uuid,
    retention_days: u32,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE tasks SET deleted_at = now(), purge_at = now() + make_interval(days => $2), updated_at = now() \
         WHERE id = $1 RETURNING purge_at",
    )
    .bind(id)
    .bind(retention_days as i32)
    .fetch_one(conn)
    .await
}

pub(crate) async fn purge(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM tasks WHERE deleted_at IS NOT NULL AND purge_at < now()")
        .execute(pool)
        .await?
        .rows_affected())
}

/// Everything a state change may set at once; `None` leaves a column as it is.
#[derive(Debug, Default)]
pub(crate) struct Change {
    pub state: Option<pb::TaskState>,
    pub classification: Option<pb::TaskClassification>,
    pub strategy: Option<i16>,
    pub model: Option<String>,
    pub ab: Option<(String, String)>,
    pub failure: Option<Option<pb::TaskFailure>>,
    pub current_run: Option<Uuid>,
    pub started: bool,
    pub ended: Option<bool>,
    pub budget: Option<Budget>,
    pub pull_request: Option<(String, String)>,
    pub test_command: Option<String>,
}

/// Applies `change` to the (locked) task and returns the new row.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    id: Uuid,
    change: &Change,
) -> Result<TaskRow, sqlx::Error> {
    let (ab_test, ab_variant) = change.ab.clone().unzip();
    let (pr_url, pr_id) = change.pull_request.clone().unzip();
    sqlx::query_as(&format!(
        "UPDATE tasks SET updated_at = now(), \
         state = coalesce($2, state), \
         classification = coalesce($3, classification), \
         strategy = coalesce($4, strategy), model = coalesce($5, model), \
         ab_test_id = coalesce($6, ab_test_id), ab_variant_id = coalesce($7, ab_variant_id), \
         failure = CASE WHEN $8 THEN $9 ELSE failure END, \
         current_run_id = coalesce($10, current_run_id), \
         run_count = run_count + CASE WHEN $10 IS NULL THEN 0 ELSE 1 END, \
         started_at = CASE WHEN $11 THEN coalesce(started_at, now()) ELSE started_at END, \
         ended_at = CASE WHEN $12 IS NULL THEN ended_at WHEN $12 THEN now() ELSE NULL END, \
         max_tokens = coalesce($13, max_tokens), max_iterations = coalesce($14, max_iterations), \
         max_wall_secs = coalesce($15, max_wall_secs), \
         pull_request_url = coalesce($16, pull_request_url), pull_request_id = coalesce($17, pull_request_id), \
         test_command = coalesce($18, test_command) \
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(change.state.map(|s| s as i16))
    .bind(change.classification.as_ref().map(Message::encode_to_vec))
    .bind(change.strategy)
    .bind(&change.model)
    .bind(ab_test)
    .bind(ab_variant)
    .bind(change.failure.is_some())
    .bind(change.failure.clone().flatten().map(|f| f.encode_to_vec()))
    .bind(change.current_run)
    .bind(change.started)
    .bind(change.ended)
    .bind(change.budget.map(|b| b.tokens))
    .bind(change.budget.map(|b| b.iterations))
    .bind(change.budget.map(|b| b.wall_secs))
    .bind(pr_url)
    .bind(pr_id)
    .bind(&change.test_command)
    .fetch_one(conn)
    .await
}

/// Adds a run's use to the task's counters.
pub(crate) async fn add_usage(
    conn: &mut PgConnection,
    id: Uuid,
    input_tokens: i64,
    output_tokens: i64,
    iterations: i32,
    cost_micros: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE tasks SET input_tokens = input_tokens + $2, output_tokens = output_tokens + $3, \
         iterations = iterations + $4, cost_micros = cost_micros + $5, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(input_tokens)
    .bind(output_tokens)
    .bind(iterations)
    .bind(cost_micros)
    .execute(conn)
    .await
    .map(drop)
}

/// Records a state change in the feed WatchTasks replays, and wakes the watchers.
pub(crate) async fn record_change(
    conn: &mut PgConnection,
    task: &pb::Task,
    previous: pb::TaskState,
    actor: &str,
    reason: &str,
) -> Result<i64, sqlx::Error> {
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO task_changes (task_id, owner, previous_state, state, task, actor, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
    )
    .bind(Uuid::parse_str(&task.id).unwrap_or_default())
    .bind(&task.owner)
    .bind(previous as i16)
    .bind(task.state as i16)
    .bind(task.encode_to_vec())
    .bind(actor)
    .bind(reason)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify('orchestration_tasks', $1)").bind(&task.id).execute(conn).await?;
    Ok(seq)
}

/// One row of the change feed.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ChangeRow {
    pub seq: i64,
    pub task_id: Uuid,
    pub previous_state: i16,
    pub task: Vec<u8>,
    pub changed_at: DateTime<Utc>,
}

/// The owner's changes after `after` (or every owner's, for `None`), oldest first.
pub(crate) async fn changes_after(
    conn: &mut PgConnection,
    owner: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<ChangeRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, task_id, previous_state, task, changed_at FROM task_changes \
         WHERE ($1::text IS NULL OR owner = $1) AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(owner)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The oldest change still kept and the newest one (0, 0 when none).
pub(crate) async fn change_bounds(conn: &mut PgConnection) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as("SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM task_changes")
        .fetch_one(conn)
        .await
}

/// Unfinished tasks of the owner (every owner for `None`), for a watch's first snapshot.
pub(crate) async fn unfinished(
    conn: &mut PgConnection,
    owner: Option<&str>,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE deleted_at IS NULL AND ($1::text IS NULL OR owner = $1) \
         AND state NOT IN (7, 8, 9) ORDER BY created_at LIMIT 1000"
    ))
    .bind(owner)
    .fetch_all(conn)
    .await
}

/// Keeps the change feed for `hours` (WatchTasks promises 24).
pub(crate) async fn purge_changes(pool: &sqlx::PgPool, hours: i32) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM task_changes WHERE changed_at < now() - make_interval(hours => $1)")
        .bind(hours)
        .execute(pool)
        .await?
        .rows_affected())
}

/// Claims a task waiting for classification or model selection (after a crash, or a
/// creation whose follow-up never ran) for `lease_secs`.
pub(crate) async fn claim_pipeline(
    conn: &mut PgConnection,
    id: Option<Uuid>,
    lease_secs: i64,
) -> Result<Option<TaskRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE tasks SET pipeline_lease = now() + make_interval(secs => $2) WHERE id = ( \
           SELECT id FROM tasks WHERE state IN (1, 2) AND deleted_at IS NULL \
           AND ($1::uuid IS NULL OR id = $1) \
           AND (pipeline_lease IS NULL OR pipeline_lease < now()) \
           ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(lease_secs as f64)
    .fetch_optional(conn)
    .await
}
