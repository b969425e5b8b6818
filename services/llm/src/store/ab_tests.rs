//! A/B tests, their outcomes and their per-variant statistics.

use crate::selection::RunningTest;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

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
