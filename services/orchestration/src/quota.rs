//! Per-user quotas, checked before any work starts: executions per sliding hour (refused with
//! RESOURCE_EXHAUSTED and RetryInfo), concurrent runs (more wait in QUEUED) and monthly tokens.

use crate::config::QuotasConfig;
use crate::engine::Engine;
use crate::error::{OrchestrationError, Result};
use codingagent_kernel::identity::Caller;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use codingagent_proto::helpers::timestamp;
use sqlx::PgConnection;
use std::time::Duration;

/// Executions in the sliding hour: runs started plus tasks still waiting for their first run,
/// and when the oldest of them leaves the window. One statement, so both counts come from
/// one snapshot: a task being queued meanwhile (its run inserted, its state moved on) is
/// counted once, never zero times.
async fn executions(
    conn: &mut PgConnection,
    owner: &str,
) -> Result<(i64, Option<chrono::DateTime<chrono::Utc>>)> {
    Ok(sqlx::query_as(
        "WITH e AS ( \
           SELECT created_at FROM runs WHERE owner = $1 AND created_at > now() - interval '1 hour' \
           UNION ALL \
           SELECT created_at FROM tasks WHERE owner = $1 AND state IN (1, 2) AND deleted_at IS NULL \
             AND created_at > now() - interval '1 hour') \
         SELECT count(*), min(created_at) + interval '1 hour' FROM e",
    )
    .bind(owner)
    .fetch_one(&mut *conn)
    .await?)
}

/// Inside the creating (or retrying) transaction: refuses the execution when the owner's
/// hourly or monthly quota is spent. The owner's advisory lock serialises concurrent
/// creations, so a burst cannot slip past the limit together.
pub(crate) async fn admit_execution(
    conn: &mut PgConnection,
    quotas: &QuotasConfig,
    owner: &str,
) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('orchestration-quota:' || $1, 0))")
        .bind(owner)
        .execute(&mut *conn)
        .await?;
    if quotas.executions_per_hour > 0 {
        let (used, oldest_leaves) = executions(conn, owner).await?;
        if used >= quotas.executions_per_hour {
            let retry = oldest_leaves
                .map(|t| (t - chrono::Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(Duration::from_secs(60))
                .max(Duration::from_secs(1));
            return Err(OrchestrationError::Exhausted(
                "EXECUTIONS_PER_HOUR",
                format!(
                    "at most {} executions per hour; {used} in the last hour",
                    quotas.executions_per_hour
                ),
                Some(retry),
            ));
        }
    }
    if quotas.monthly_tokens > 0 {
        let (_, tokens) = crate::store::runs::owner_usage(conn, owner).await?;
        if tokens >= quotas.monthly_tokens {
            let retry = next_month() - chrono::Utc::now();
            return Err(OrchestrationError::Exhausted(
                "MONTHLY_TOKENS",
                format!("the monthly quota of {} tokens is spent", quotas.monthly_tokens),
                Some(retry.to_std().unwrap_or_default()),
            ));
        }
    }
    Ok(())
}

fn next_month() -> chrono::DateTime<chrono::Utc> {
    use chrono::Datelike;
    let now = chrono::Utc::now();
    let (year, month) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    chrono::NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .unwrap_or(now)
}

pub(crate) async fn get(engine: &Engine, caller: &Caller) -> Result<pb::GetUserQuotaResponse> {
    let owner = caller.require_user()?.to_owned();
    let q = &engine.config.quotas;
    let mut conn = engine.pool.acquire().await?;
    let (executions, oldest) = executions(&mut conn, &owner).await?;
    let (running, tokens) = crate::store::runs::owner_usage(&mut conn, &owner).await?;
    Ok(pb::GetUserQuotaResponse {
        executions_per_hour: Some(pb::QuotaUsage {
            used: executions,
            limit: q.executions_per_hour,
            reset_time: oldest.map(timestamp),
        }),
        concurrent_runs: Some(pb::QuotaUsage { used: running, limit: q.concurrent_runs, reset_time: None }),
        monthly_tokens: Some(pb::QuotaUsage {
            used: tokens,
            limit: q.monthly_tokens,
            reset_time: Some(timestamp(next_month())),
        }),
    })
}
