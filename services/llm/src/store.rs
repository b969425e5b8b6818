//! PostgreSQL access for usage, budgets, A/B tests and learned-selector history.

use crate::selection::{ModelHistory, RunningTest};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use codingagent_kernel::kafka::{NOTIFY_SELECT, OutboxEvent};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// The calendar month (UTC) budgets are counted in: [start, end).
pub(crate) fn month(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().unwrap_or(now);
    let (year, month) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    let end = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single().unwrap_or(now);
    (start, end)
}

/// Whose budget: a user's, or a cloud provider's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subject {
    User(String),
    Provider(String),
}

impl Subject {
    fn kind(&self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::Provider(_) => "provider",
        }
    }

    pub(crate) fn name(&self) -> &str {
        match self {
            Self::User(name) | Self::Provider(name) => name,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BudgetRow {
    pub limit: i64,
    /// Tokens charged this month.
    pub used: i64,
    pub is_default: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub updated_by: String,
}

/// The subject's budget and its tokens used in the month starting at `period`, in one query.
pub(crate) async fn budget(
    db: impl sqlx::PgExecutor<'_>,
    subject: &Subject,
    default_limit: i64,
    period: DateTime<Utc>,
) -> Result<BudgetRow, sqlx::Error> {
    let row = sqlx::query(
        "SELECT b.monthly_token_limit, b.created_at, b.updated_at, b.updated_by, COALESCE(t.tokens, 0) \
         FROM (SELECT 1) AS one \
         LEFT JOIN budgets b ON b.subject_kind = $1 AND b.subject = $2 \
         LEFT JOIN usage_totals t ON t.subject_kind = $1 AND t.subject = $2 AND t.period = $3::date",
    )
    .bind(subject.kind())
    .bind(subject.name())
    .bind(period.date_naive())
    .fetch_one(db)
    .await?;
    let limit: Option<i64> = row.try_get(0)?;
    Ok(BudgetRow {
        limit: limit.unwrap_or(default_limit),
        is_default: limit.is_none(),
        created_at: row.try_get(1)?,
        updated_at: row.try_get(2)?,
        updated_by: row.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
        used: row.try_get(4)?,
    })
}

pub(crate) async fn set_budget(
    db: impl sqlx::PgExecutor<'_>,
    subject: &Subject,
    limit: i64,
    by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO budgets (subject_kind, subject, monthly_token_limit, updated_by) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (subject_kind, subject) DO UPDATE SET monthly_token_limit = EXCLUDED.monthly_token_limit, \
         updated_by = EXCLUDED.updated_by, updated_at = now()",
    )
    .bind(subject.kind())
    .bind(subject.name())
    .bind(limit)
    .bind(by)
    .execute(db)
    .await
    .map(drop)
}

/// What asking for a reservation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// Held under the given id until released or expired.
    Held,
    /// The subject has no limit; nothing was held.
    Unlimited,
    /// It does not fit: `used` counts tokens charged this month and those held by calls in flight.
    Refused { limit: i64, used: i64 },
}

/// Reserves `tokens` of the subject's budget for the month starting at `period` when what is
/// charged, what other calls hold and `tokens` together stay within the limit. `default_limit`
/// applies when no budget was set for the subject; `None` there means unlimited.
///
/// The subject's usage_totals row is locked first, so concurrent reservations and usage records
/// for the subject take turns; the check then runs in a fresh statement, which in READ
/// COMMITTED sees everything committed before the lock was granted.
pub(crate) async fn reserve(
    pool: &PgPool,
    subject: &Subject,
    default_limit: Option<i64>,
    period: DateTime<Utc>,
    id: Uuid,
    tokens: i64,
    ttl: std::time::Duration,
) -> Result<Reservation, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (used, limit): (i64, Option<i64>) = sqlx::query_as(
        "INSERT INTO usage_totals (subject_kind, subject, period) VALUES ($1, $2, $3::date) \
         ON CONFLICT (subject_kind, subject, period) DO UPDATE SET tokens = usage_totals.tokens \
         RETURNING tokens, (SELECT monthly_token_limit FROM budgets WHERE subject_kind = $1 AND subject = $2)",
    )
    .bind(subject.kind())
    .bind(subject.name())
    .bind(period.date_naive())
    .fetch_one(&mut *tx)
    .await?;
    let Some(limit) = limit.or(default_limit) else {
        tx.commit().await?;
        return Ok(Reservation::Unlimited);
    };
    let (held, inserted): (i64, bool) = sqlx::query_as(
        "WITH held AS (SELECT COALESCE(SUM(tokens), 0)::BIGINT AS tokens FROM budget_reservations \
           WHERE subject_kind = $1 AND subject = $2 AND expires_at > now()), \
         reserved AS (INSERT INTO budget_reservations (id, subject_kind, subject, tokens, expires_at) \
           SELECT $3, $1, $2, $4, now() + make_interval(secs => $5) FROM held WHERE $6 + held.tokens + $4 <= $7 \
           RETURNING id) \
         SELECT held.tokens, EXISTS (SELECT 1 FROM reserved) FROM held",
    )
    .bind(subject.kind())
    .bind(subject.name())
    .bind(id)
    .bind(tokens)
    .bind(ttl.as_secs_f64())
    .bind(used)
    .bind(limit)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(if inserted { Reservation::Held } else { Reservation::Refused { limit, used: used + held } })
}

/// Gives reservations back, and drops every expired one on the way.
pub(crate) async fn release(pool: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM budget_reservations WHERE id = ANY($1) OR expires_at < now()")
        .bind(ids)
        .execute(pool)
        .await
        .map(drop)
}

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

/// An A/B test as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Variant {
    pub id: String,
    pub model: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Scope {
    pub task_types: Vec<i32>,
    pub complexities: Vec<i32>,
    pub languages: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AbTestRow {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub owner: String,
    pub state: i16,
    pub variants: Vec<Variant>,
    pub scope: Scope,
    pub alpha: f64,
    pub min_samples: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub winner_variant_id: Option<String>,
    pub promoted: bool,
}

pub(crate) const RUNNING: i16 = 1;
pub(crate) const STOPPED: i16 = 2;

const AB_COLUMNS: &str = "id, name, description, owner, state, variants, scope, alpha, min_samples, created_at, \
     updated_at, stopped_at, winner_variant_id, promoted";

fn ab_row(r: &sqlx::postgres::PgRow) -> Result<AbTestRow, sqlx::Error> {
    let variants: serde_json::Value = r.try_get(5)?;
    let scope: serde_json::Value = r.try_get(6)?;
    Ok(AbTestRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        description: r.try_get(2)?,
        owner: r.try_get(3)?,
        state: r.try_get(4)?,
        variants: serde_json::from_value(variants).unwrap_or_default(),
        scope: serde_json::from_value(scope).unwrap_or_default(),
        alpha: r.try_get(7)?,
        min_samples: r.try_get(8)?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
        stopped_at: r.try_get(11)?,
        winner_variant_id: r.try_get(12)?,
        promoted: r.try_get(13)?,
    })
}

/// Inserts a test; a repeated `request_id` of the same owner returns the first test.
pub(crate) async fn create_ab_test(
    pool: &PgPool,
    test: &AbTestRow,
    request_id: Option<&str>,
) -> Result<AbTestRow, sqlx::Error> {
    let inserted = sqlx::query(&format!(
        "INSERT INTO ab_tests (id, name, description, owner, request_id, state, variants, scope, alpha, min_samples) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) ON CONFLICT (owner, request_id) DO NOTHING RETURNING {AB_COLUMNS}"
    ))
    .bind(test.id)
    .bind(&test.name)
    .bind(&test.description)
    .bind(&test.owner)
    .bind(request_id)
    .bind(RUNNING)
    .bind(serde_json::to_value(&test.variants).unwrap_or_default())
    .bind(serde_json::to_value(&test.scope).unwrap_or_default())
    .bind(test.alpha)
    .bind(test.min_samples)
    .fetch_optional(pool)
    .await?;
    match inserted {
        Some(row) => ab_row(&row),
        None => {
            let row = sqlx::query(&format!(
                "SELECT {AB_COLUMNS} FROM ab_tests WHERE owner = $1 AND request_id = $2"
            ))
            .bind(&test.owner)
            .bind(request_id)
            .fetch_one(pool)
            .await?;
            ab_row(&row)
        }
    }
}

pub(crate) async fn ab_test(pool: &PgPool, id: Uuid) -> Result<Option<AbTestRow>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {AB_COLUMNS} FROM ab_tests WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(ab_row).transpose()
}

/// Newest first, keyset-paginated after (created_at, id).
pub(crate) async fn list_ab_tests(
    pool: &PgPool,
    state: Option<i16>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<AbTestRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {AB_COLUMNS} FROM ab_tests WHERE ($1::SMALLINT IS NULL OR state = $1) \
         AND ($2::TIMESTAMPTZ IS NULL OR (created_at, id) < ($2, $3)) ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(state)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(ab_row).collect()
}

pub(crate) async fn running_tests(pool: &PgPool) -> Result<Vec<RunningTest>, sqlx::Error> {
    Ok(list_ab_tests(pool, Some(RUNNING), None, 100)
        .await?
        .into_iter()
        .rev() // oldest first: an older test keeps its subjects when a newer one overlaps
        .map(|t| RunningTest {
            id: t.id.to_string(),
            name: t.name,
            variants: t.variants.into_iter().map(|v| (v.id, v.model, v.weight)).collect(),
            task_types: t.scope.task_types,
            complexities: t.scope.complexities,
            languages: t.scope.languages,
        })
        .collect())
}

/// Records one outcome; a repeated `request_key` for the test is ignored. Returns whether it
/// was recorded now.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_outcome(
    pool: &PgPool,
    test: Uuid,
    variant: &str,
    subject: &str,
    success: bool,
    latency_ms: i64,
    tokens: i64,
    quality: Option<f64>,
    request_key: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO ab_outcomes (ab_test_id, variant_id, subject_id, success, latency_ms, tokens, quality_score, request_key) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (ab_test_id, request_key) DO NOTHING",
    )
    .bind(test)
    .bind(variant)
    .bind(subject)
    .bind(success)
    .bind(latency_ms)
    .bind(tokens)
    .bind(quality)
    .bind(request_key)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Outcome statistics per variant.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct VariantStats {
    pub trials: i64,
    pub successes: i64,
    pub mean_latency_ms: f64,
    pub mean_tokens: f64,
    pub mean_quality: Option<f64>,
}

pub(crate) async fn variant_stats(
    pool: &PgPool,
    test: Uuid,
) -> Result<Vec<(String, VariantStats)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT variant_id, count(*), count(*) FILTER (WHERE success), COALESCE(AVG(latency_ms), 0)::DOUBLE PRECISION, \
         COALESCE(AVG(tokens), 0)::DOUBLE PRECISION, AVG(quality_score) FROM ab_outcomes WHERE ab_test_id = $1 GROUP BY 1",
    )
    .bind(test)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                VariantStats {
                    trials: r.try_get(1)?,
                    successes: r.try_get(2)?,
                    mean_latency_ms: r.try_get(3)?,
                    mean_tokens: r.try_get(4)?,
                    mean_quality: r.try_get(5)?,
                },
            ))
        })
        .collect()
}

/// Stops a running test; `None` when it was already stopped (the caller returns it as is).
pub(crate) async fn stop_ab_test(
    conn: &mut PgConnection,
    id: Uuid,
    winner: Option<&str>,
    promoted: bool,
) -> Result<Option<AbTestRow>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "UPDATE ab_tests SET state = $2, stopped_at = now(), updated_at = now(), winner_variant_id = $3, promoted = $4 \
         WHERE id = $1 AND state = $5 RETURNING {AB_COLUMNS}"
    ))
    .bind(id)
    .bind(STOPPED)
    .bind(winner)
    .bind(promoted)
    .bind(RUNNING)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(ab_row).transpose()
}

pub(crate) async fn promote_default(
    conn: &mut PgConnection,
    scope_key: &str,
    model: &str,
    test: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO promoted_defaults (scope_key, model, ab_test_id) VALUES ($1, $2, $3) \
         ON CONFLICT (scope_key) DO UPDATE SET model = EXCLUDED.model, ab_test_id = EXCLUDED.ab_test_id, created_at = now()",
    )
    .bind(scope_key)
    .bind(model)
    .bind(test)
    .execute(conn)
    .await
    .map(drop)
}

/// The promoted default for the most specific matching scope key.
pub(crate) async fn promoted_default(pool: &PgPool, keys: &[String]) -> Result<Option<String>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT scope_key, model FROM promoted_defaults WHERE scope_key = ANY($1)")
            .bind(keys)
            .fetch_all(pool)
            .await?;
    Ok(keys.iter().find_map(|key| rows.iter().find(|(k, _)| k == key).map(|(_, m)| m.clone())))
}

/// Recorded task outcomes per model for a task bucket.
pub(crate) async fn model_history(
    pool: &PgPool,
    task_type: i32,
    complexity: i32,
) -> Result<Vec<ModelHistory>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT model, count(*), count(*) FILTER (WHERE success), COALESCE(AVG(cost_micros), 0)::DOUBLE PRECISION \
         FROM model_outcomes WHERE task_type = $1 AND complexity = $2 GROUP BY model",
    )
    .bind(task_type as i16)
    .bind(complexity as i16)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ModelHistory {
                model: r.try_get(0)?,
                tasks: r.try_get(1)?,
                successes: r.try_get(2)?,
                mean_cost_micros: r.try_get(3)?,
            })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_model_outcome(
    conn: &mut PgConnection,
    task_id: &str,
    model: &str,
    task_type: i32,
    complexity: i32,
    language: i32,
    success: bool,
    tokens: i64,
    cost_micros: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO model_outcomes (task_id, model, task_type, complexity, language, success, tokens, cost_micros) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (task_id) DO UPDATE SET model = EXCLUDED.model, \
         success = EXCLUDED.success, tokens = EXCLUDED.tokens, cost_micros = EXCLUDED.cost_micros, recorded_at = now()",
    )
    .bind(task_id)
    .bind(model)
    .bind(task_type as i16)
    .bind(complexity as i16)
    .bind(language as i16)
    .bind(success)
    .bind(tokens)
    .bind(cost_micros)
    .execute(conn)
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months_in_utc() {
        let (start, end) = month(Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 0).unwrap());
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    }
}
