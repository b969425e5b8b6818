//! The task log: lines with a per-task contiguous seq, allocated under the task's row lock so
//! a replay and the live tail agree on the order.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A line to append.
#[derive(Debug, Clone)]
pub(crate) struct NewLine {
    pub level: i16,
    pub source: i16,
    pub run_id: Option<Uuid>,
    pub step_id: Option<Uuid>,
    pub message: String,
    pub fields: Option<serde_json::Value>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct LineRow {
    pub seq: i64,
    pub time: DateTime<Utc>,
    pub level: i16,
    pub source: i16,
    pub run_id: Option<Uuid>,
    pub step_id: Option<Uuid>,
    pub message: String,
    pub fields: Option<serde_json::Value>,
}

/// Appends `lines` in order and returns the seq of the last; wakes every stream of the task
/// (on any replica) when the transaction commits.
pub(crate) async fn append(
    conn: &mut PgConnection,
    task: Uuid,
    lines: &[NewLine],
) -> Result<i64, sqlx::Error> {
    if lines.is_empty() {
        return sqlx::query_scalar("SELECT last_log_seq FROM tasks WHERE id = $1")
            .bind(task)
            .fetch_one(conn)
            .await;
    }
    let last: i64 = sqlx::query_scalar(
        "UPDATE tasks SET last_log_seq = last_log_seq + $2 WHERE id = $1 RETURNING last_log_seq",
    )
    .bind(task)
    .bind(lines.len() as i64)
    .fetch_one(&mut *conn)
    .await?;
    let first = last - lines.len() as i64 + 1;
    let seqs: Vec<i64> = (first..=last).collect();
    let levels: Vec<i16> = lines.iter().map(|l| l.level).collect();
    let sources: Vec<i16> = lines.iter().map(|l| l.source).collect();
    let runs: Vec<Option<Uuid>> = lines.iter().map(|l| l.run_id).collect();
    let steps: Vec<Option<Uuid>> = lines.iter().map(|l| l.step_id).collect();
    let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
    let fields: Vec<Option<serde_json::Value>> = lines.iter().map(|l| l.fields.clone()).collect();
    sqlx::query(
        "INSERT INTO log_lines (task_id, seq, level, source, run_id, step_id, message, fields) \
         SELECT $1, * FROM unnest($2::bigint[], $3::smallint[], $4::smallint[], $5::uuid[], $6::uuid[], $7::text[], $8::jsonb[])",
    )
    .bind(task)
    .bind(&seqs)
    .bind(&levels)
    .bind(&sources)
    .bind(&runs)
    .bind(&steps)
    .bind(&messages)
    .bind(&fields)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify('orchestration_logs', $1)").bind(task.to_string()).execute(conn).await?;
    Ok(last)
}

/// Lines after `after`, oldest first, at most `limit`.
pub(crate) async fn after(
    conn: &mut PgConnection,
    task: Uuid,
    after: i64,
    min_level: i16,
    limit: i64,
) -> Result<Vec<LineRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, time, level, source, run_id, step_id, message, fields FROM log_lines \
         WHERE task_id = $1 AND seq > $2 AND level >= $3 ORDER BY seq LIMIT $4",
    )
    .bind(task)
    .bind(after)
    .bind(min_level)
    .bind(limit)
    .fetch_all(conn)
    .await
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct HitRow {
    #[sqlx(flatten)]
    pub line: LineRow,
    pub rank: f32,
    pub snippet: String,
}

/// Best matches first (ties: earlier lines), keyset-paged after `(rank, seq)`.
pub(crate) async fn search(
    conn: &mut PgConnection,
    task: Uuid,
    query: &str,
    cursor: Option<(f32, i64)>,
    limit: i64,
) -> Result<Vec<HitRow>, sqlx::Error> {
    let (rank, seq) = cursor.unzip();
    sqlx::query_as(
        "WITH q AS (SELECT websearch_to_tsquery('simple', $2) AS q), hits AS ( \
           SELECT l.*, ts_rank_cd(l.search, q.q) AS rank FROM log_lines l, q \
           WHERE l.task_id = $1 AND l.search @@ q.q) \
         SELECT seq, time, level, source, run_id, step_id, message, fields, rank, \
           ts_headline('simple', message, (SELECT q FROM q), 'StartSel=\u{2}, StopSel=\u{3}, HighlightAll=true') AS snippet \
         FROM hits WHERE ($3::real IS NULL OR (rank, -seq) < ($3, -$4)) \
         ORDER BY rank DESC, seq LIMIT $5",
    )
    .bind(task)
    .bind(query)
    .bind(rank)
    .bind(seq)
    .bind(limit)
    .fetch_all(conn)
    .await
}
