//! What selection learns from: defaults promoted from A/B winners and task outcomes per model.

use crate::selection::ModelHistory;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

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
