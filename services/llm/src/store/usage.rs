//! The record of every call, the month's totals kept with it, and the queries over both.

use chrono::{DateTime, Utc};
use codingagent_kernel::kafka::{NOTIFY_SELECT, OutboxEvent};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// One call to record.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub(crate) struct Usage {
    pub id: Uuid,
    pub caller_kind: i16,
    pub caller_id: String,
    pub user_id: Option<String>,
    pub task_id: Option<String>,
    pub model: String,
    pub provider: String,
    pub kind: i16,
    pub outcome: i16,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub cost_micros: i64,
    pub cache_hit: bool,
    pub selection_reason: i16,
    pub ab_test_id: Option<Uuid>,
    pub ab_variant_id: Option<String>,
    pub finish_reason: i16,
    pub task_type: i16,
    pub complexity: i16,
    pub language: i16,
    pub created_at: DateTime<Utc>,
}

/// Inserts the record with its event and, unless it was a free cache hit, adds its tokens to
/// the month's totals of the user and the provider: one statement, so one round trip and
/// atomic without a transaction.
pub(crate) async fn insert_usage(
    pool: &PgPool,
    usage: &Usage,
    event: OutboxEvent,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "WITH record AS (INSERT INTO usage_records (id, created_at, caller_kind, caller_id, user_id, task_id, model, \
         provider, kind, outcome, input_tokens, output_tokens, latency_ms, ttft_ms, cost_micros, cache_hit, \
         selection_reason, ab_test_id, ab_variant_id, finish_reason, task_type, complexity, language) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23)), \
         totals AS (INSERT INTO usage_totals (subject_kind, subject, period, tokens) \
           SELECT kind, subject, date_trunc('month', $2 AT TIME ZONE 'UTC')::date, $11 + $12 \
           FROM (VALUES ('user', $5), ('provider', $8)) AS s(kind, subject) \
           WHERE subject IS NOT NULL AND NOT $16 AND $11 + $12 > 0 \
           ON CONFLICT (subject_kind, subject, period) DO UPDATE SET tokens = usage_totals.tokens + EXCLUDED.tokens), \
         {} {NOTIFY_SELECT}",
        OutboxEvent::cte(24)
    );
    let query = sqlx::query(&sql)
        .bind(usage.id)
        .bind(usage.created_at)
        .bind(usage.caller_kind)
        .bind(&usage.caller_id)
        .bind(&usage.user_id)
        .bind(&usage.task_id)
        .bind(&usage.model)
        .bind(&usage.provider)
        .bind(usage.kind)
        .bind(usage.outcome)
        .bind(usage.input_tokens)
        .bind(usage.output_tokens)
        .bind(usage.latency_ms)
        .bind(usage.ttft_ms)
        .bind(usage.cost_micros)
        .bind(usage.cache_hit)
        .bind(usage.selection_reason)
        .bind(usage.ab_test_id)
        .bind(&usage.ab_variant_id)
        .bind(usage.finish_reason)
        .bind(usage.task_type)
        .bind(usage.complexity)
        .bind(usage.language);
    event.bind(query).execute(pool).await.map(drop)
}

/// Filters of ListUsage/GetUsageSummary; `None` means any.
#[derive(Debug, Clone, Default)]
pub(crate) struct UsageFilter {
    pub user_id: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub task_id: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

const USAGE_WHERE: &str = "($1::TEXT IS NULL OR user_id = $1) AND ($2::TEXT IS NULL OR model = $2) \
     AND ($3::TEXT IS NULL OR provider = $3) AND ($4::TEXT IS NULL OR task_id = $4) \
     AND ($5::TIMESTAMPTZ IS NULL OR created_at >= $5) AND ($6::TIMESTAMPTZ IS NULL OR created_at < $6)";

/// Newest first, keyset-paginated after (created_at, id).
pub(crate) async fn list_usage(
    pool: &PgPool,
    filter: &UsageFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Usage>, sqlx::Error> {
    sqlx::query_as::<_, Usage>(&format!(
        "SELECT id, created_at, caller_kind, caller_id, user_id, task_id, model, provider, kind, outcome, input_tokens, \
         output_tokens, latency_ms, ttft_ms, cost_micros, cache_hit, selection_reason, ab_test_id, ab_variant_id, \
         finish_reason, task_type, complexity, language FROM usage_records WHERE {USAGE_WHERE} \
         AND ($7::TIMESTAMPTZ IS NULL OR (created_at, id) < ($7, $8)) ORDER BY created_at DESC, id DESC LIMIT $9"
    ))
    .bind(&filter.user_id)
    .bind(&filter.model)
    .bind(&filter.provider)
    .bind(&filter.task_id)
    .bind(filter.start)
    .bind(filter.end)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Aggregates of matching usage, optionally grouped by a key expression.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Aggregate {
    pub key: String,
    pub calls: i64,
    pub errors: i64,
    pub cache_hits: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    pub mean_latency_ms: f64,
    pub p95_latency_ms: f64,
}

/// `group` is one of a fixed set of SQL expressions chosen by the caller, never user text.
pub(crate) async fn summarize(
    pool: &PgPool,
    filter: &UsageFilter,
    group: &'static str,
) -> Result<Vec<Aggregate>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {group} AS key, count(*), count(*) FILTER (WHERE outcome = 2), count(*) FILTER (WHERE cache_hit), \
         COALESCE(SUM(input_tokens), 0)::BIGINT, COALESCE(SUM(output_tokens), 0)::BIGINT, COALESCE(SUM(cost_micros), 0)::BIGINT, \
         COALESCE(AVG(latency_ms), 0)::DOUBLE PRECISION, \
         COALESCE(percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms), 0)::DOUBLE PRECISION \
         FROM usage_records WHERE {USAGE_WHERE} GROUP BY 1 ORDER BY 1"
    ))
    .bind(&filter.user_id)
    .bind(&filter.model)
    .bind(&filter.provider)
    .bind(&filter.task_id)
    .bind(filter.start)
    .bind(filter.end)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Aggregate {
                key: r.try_get::<Option<String>, _>(0)?.unwrap_or_default(),
                calls: r.try_get(1)?,
                errors: r.try_get(2)?,
                cache_hits: r.try_get(3)?,
                input_tokens: r.try_get(4)?,
                output_tokens: r.try_get(5)?,
                cost_micros: r.try_get(6)?,
                mean_latency_ms: r.try_get(7)?,
                p95_latency_ms: r.try_get(8)?,
            })
        })
        .collect()
}
