//! Token budgets per user and per cloud provider, and the reservations calls hold against them.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

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
