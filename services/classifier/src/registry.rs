//! The model registry and training jobs in PostgreSQL: every trained model with its ONNX
//! artifact, metrics and lifecycle status, exactly one of them SERVING.

use crate::convert::{actor, timestamp};
use codingagent_kernel::kafka::enqueue;
use codingagent_kernel::kafka::topics;
use codingagent_proto::codingagent::classifier::v1 as pb;
use codingagent_proto::codingagent::common::v1::Actor;
use codingagent_proto::codingagent::events::v1 as events;
use prost::Message;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

const MODEL_COLUMNS: &str = "id, version, status, created_at, updated_at, feature_version, training_sample_count, \
     snapshot_id, training_job_id, artifact_sha256, octet_length(artifact) AS artifact_size, metrics, \
     baseline_metrics, baseline_model_id, rejection_reason, promoted_at, retired_at, promoted_by_kind, promoted_by";

pub(crate) const SERVING: i16 = pb::ModelStatus::Serving as i16;
pub(crate) const CANDIDATE: i16 = pb::ModelStatus::Candidate as i16;
pub(crate) const RETIRED: i16 = pb::ModelStatus::Retired as i16;
pub(crate) const REJECTED: i16 = pb::ModelStatus::Rejected as i16;

fn decode_metrics(bytes: Option<Vec<u8>>) -> Option<pb::ModelMetrics> {
    bytes.and_then(|b| pb::ModelMetrics::decode(b.as_slice()).ok())
}

fn model(row: &PgRow) -> pb::ClassifierModel {
    let id_string =
        |column: &str| row.get::<Option<Uuid>, _>(column).map(|u| u.to_string()).unwrap_or_default();
    let time = |column: &str| row.get::<Option<chrono::DateTime<chrono::Utc>>, _>(column).map(timestamp);
    pb::ClassifierModel {
        id: row.get::<Uuid, _>("id").to_string(),
        version: row.get("version"),
        status: i32::from(row.get::<i16, _>("status")),
        create_time: time("created_at"),
        update_time: time("updated_at"),
        metrics: decode_metrics(row.get("metrics")),
        baseline_metrics: decode_metrics(row.get("baseline_metrics")),
        baseline_model_id: id_string("baseline_model_id"),
        feature_version: row.get("feature_version"),
        training_sample_count: row.get("training_sample_count"),
        data_snapshot_id: id_string("snapshot_id"),
        training_job_id: id_string("training_job_id"),
        artifact_sha256: row.get("artifact_sha256"),
        artifact_size_bytes: i64::from(row.get::<i32, _>("artifact_size")),
        rejection_reason: row.get("rejection_reason"),
        promote_time: time("promoted_at"),
        retire_time: time("retired_at"),
        promoted_by: row.get::<Option<i16>, _>("promoted_by_kind").map(|kind| {
            crate::convert::actor(kind, row.get::<Option<String>, _>("promoted_by").unwrap_or_default())
        }),
    }
}

/// A model to register.
#[derive(Debug)]
pub(crate) struct NewModel {
    pub id: Uuid,
    pub status: i16,
    pub feature_version: String,
    pub training_sample_count: i64,
    pub snapshot_id: Option<Uuid>,
    pub training_job_id: Option<Uuid>,
    pub artifact: Vec<u8>,
    pub metrics: pb::ModelMetrics,
    pub baseline: Option<(Uuid, pb::ModelMetrics)>,
    pub rejection_reason: String,
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) async fn insert_model(
    conn: &mut PgConnection,
    new: &NewModel,
) -> Result<pb::ClassifierModel, sqlx::Error> {
    let row = sqlx::query(&format!(
        "INSERT INTO models (id, status, feature_version, training_sample_count, snapshot_id, training_job_id, \
         artifact, artifact_sha256, metrics, baseline_metrics, baseline_model_id, rejection_reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {MODEL_COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.status)
    .bind(&new.feature_version)
    .bind(new.training_sample_count)
    .bind(new.snapshot_id)
    .bind(new.training_job_id)
    .bind(&new.artifact)
    .bind(sha256_hex(&new.artifact))
    .bind(new.metrics.encode_to_vec())
    .bind(new.baseline.as_ref().map(|(_, m)| m.encode_to_vec()))
    .bind(new.baseline.as_ref().map(|(id, _)| *id))
    .bind(&new.rejection_reason)
    .fetch_one(conn)
    .await?;
    Ok(model(&row))
}

pub(crate) async fn get_model(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<pb::ClassifierModel>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {MODEL_COLUMNS} FROM models WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(model))
}

pub(crate) async fn serving(conn: &mut PgConnection) -> Result<Option<pb::ClassifierModel>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {MODEL_COLUMNS} FROM models WHERE status = $1"))
        .bind(SERVING)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(model))
}

/// The serving model's id and artifact, for loading.
pub(crate) async fn serving_artifact(pool: &PgPool) -> Result<Option<(Uuid, Vec<u8>, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT id, artifact, artifact_sha256 FROM models WHERE status = $1")
        .bind(SERVING)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}

pub(crate) async fn artifact(conn: &mut PgConnection, id: Uuid) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("SELECT artifact FROM models WHERE id = $1").bind(id).fetch_optional(conn).await
}

pub(crate) async fn serving_id(pool: &PgPool) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM models WHERE status = $1").bind(SERVING).fetch_optional(pool).await
}

/// Models newest first, after `before_version` when paging.
pub(crate) async fn list_models(
    pool: &PgPool,
    statuses: &[i16],
    before_version: Option<i64>,
    limit: i64,
) -> Result<Vec<pb::ClassifierModel>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {MODEL_COLUMNS} FROM models WHERE (cardinality($1::smallint[]) = 0 OR status = ANY($1)) \
         AND ($2::bigint IS NULL OR version < $2) ORDER BY version DESC LIMIT $3"
    ))
    .bind(statuses)
    .bind(before_version)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(model).collect())
}

/// Inside a transaction: makes `id` serve and retires the model serving before. Returns the
/// new and the previous model.
pub(crate) async fn promote(
    conn: &mut PgConnection,
    id: Uuid,
    by: &Actor,
) -> Result<(pb::ClassifierModel, Option<pb::ClassifierModel>), sqlx::Error> {
    let previous = sqlx::query(&format!(
        "UPDATE models SET status = $1, retired_at = now(), updated_at = now() WHERE status = $2 AND id <> $3 \
         RETURNING {MODEL_COLUMNS}"
    ))
    .bind(RETIRED)
    .bind(SERVING)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let promoted = sqlx::query(&format!(
        "UPDATE models SET status = $2, promoted_at = now(), updated_at = now(), promoted_by_kind = $3, \
         promoted_by = $4 WHERE id = $1 RETURNING {MODEL_COLUMNS}"
    ))
    .bind(id)
    .bind(SERVING)
    .bind(by.kind as i16)
    .bind(&by.id)
    .fetch_one(&mut *conn)
    .await?;
    Ok((model(&promoted), previous.as_ref().map(model)))
}

/// The most recently retired model other than `except`: where a rollback returns to.
pub(crate) async fn last_retired(conn: &mut PgConnection, except: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM models WHERE status = $1 AND id <> $2 AND promoted_at IS NOT NULL \
         ORDER BY retired_at DESC NULLS LAST, version DESC LIMIT 1",
    )
    .bind(RETIRED)
    .bind(except)
    .fetch_optional(conn)
    .await
}

/// Records a `ClassifierModelPromoted` event.
pub(crate) async fn promoted_event(
    conn: &mut PgConnection,
    model: &pb::ClassifierModel,
    previous: Option<&pb::ClassifierModel>,
    by: &Actor,
    automatic: bool,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let event = events::ClassifierModelPromoted {
        model_id: model.id.clone(),
        actor: Some(by.clone()),
        occur_time: model.promote_time,
        model: Some(model.clone()),
        previous_model_id: previous.map(|p| p.id.clone()).unwrap_or_default(),
        automatic,
        reason: reason.to_owned(),
    };
    enqueue(conn, topics::CLASSIFIER, &model.id, &event).await.map(drop)
}

/// A RUNNING training job row; `false` when another job is active (the unique index on active
/// jobs refuses a second one without failing the transaction).
pub(crate) async fn create_job(conn: &mut PgConnection, id: Uuid, by: &Actor) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "INSERT INTO training_jobs (id, state, requested_by_kind, requested_by) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(pb::TrainingJobState::Running as i16)
    .bind(by.kind as i16)
    .bind(&by.id)
    .execute(conn)
    .await
    .map(|done| done.rows_affected() == 1)
}

pub(crate) async fn active_job(conn: &mut PgConnection) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM training_jobs WHERE state IN (1, 2) LIMIT 1")
        .fetch_optional(conn)
        .await
}

/// How a job ended.
#[derive(Debug)]
pub(crate) struct JobEnd<'a> {
    pub snapshot: Option<(Uuid, i64)>,
    pub candidate: Option<Uuid>,
    pub promoted: bool,
    pub failure: &'a str,
}

pub(crate) async fn finish_job(
    conn: &mut PgConnection,
    id: Uuid,
    end: &JobEnd<'_>,
) -> Result<(), sqlx::Error> {
    let state =
        if end.failure.is_empty() { pb::TrainingJobState::Succeeded } else { pb::TrainingJobState::Failed };
    sqlx::query(
        "UPDATE training_jobs SET state = $2, updated_at = now(), finished_at = now(), snapshot_id = $3, \
         sample_count = $4, candidate_model_id = $5, promoted = $6, failure_reason = $7 WHERE id = $1",
    )
    .bind(id)
    .bind(state as i16)
    .bind(end.snapshot.map(|s| s.0))
    .bind(end.snapshot.map_or(0, |s| s.1))
    .bind(end.candidate)
    .bind(end.promoted)
    .bind(end.failure)
    .execute(conn)
    .await
    .map(drop)
}

/// Jobs left RUNNING by a process that died can never finish; fail them so training is
/// possible again.
pub(crate) async fn fail_abandoned_jobs(pool: &PgPool, older_than_secs: f64) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE training_jobs SET state = $1, finished_at = now(), updated_at = now(), \
         failure_reason = 'interrupted: the classifier stopped during training' \
         WHERE state IN (1, 2) AND updated_at < now() - make_interval(secs => $2)",
    )
    .bind(pb::TrainingJobState::Failed as i16)
    .bind(older_than_secs)
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}

pub(crate) async fn get_job(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<pb::TrainingJob>, sqlx::Error> {
    let row = sqlx::query("SELECT * FROM training_jobs WHERE id = $1").bind(id).fetch_optional(conn).await?;
    Ok(row.map(|row| {
        let time = |c: &str| row.get::<Option<chrono::DateTime<chrono::Utc>>, _>(c).map(timestamp);
        pb::TrainingJob {
            id: id.to_string(),
            state: i32::from(row.get::<i16, _>("state")),
            requested_by: Some(actor(row.get("requested_by_kind"), row.get("requested_by"))),
            create_time: time("created_at"),
            update_time: time("updated_at"),
            finish_time: time("finished_at"),
            data_snapshot_id: row
                .get::<Option<Uuid>, _>("snapshot_id")
                .map(|u| u.to_string())
                .unwrap_or_default(),
            sample_count: row.get("sample_count"),
            candidate_model_id: row
                .get::<Option<Uuid>, _>("candidate_model_id")
                .map(|u| u.to_string())
                .unwrap_or_default(),
            promoted: row.get("promoted"),
            failure_reason: row.get("failure_reason"),
        }
    }))
}

/// The last successful job: its id and finish time.
pub(crate) async fn last_training(
    pool: &PgPool,
) -> Result<Option<(Uuid, chrono::DateTime<chrono::Utc>)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, finished_at FROM training_jobs WHERE state = $1 ORDER BY finished_at DESC LIMIT 1",
    )
    .bind(pb::TrainingJobState::Succeeded as i16)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Records a `ClassifierModelTrained` event.
pub(crate) async fn trained_event(
    conn: &mut PgConnection,
    model: &pb::ClassifierModel,
    job: &pb::TrainingJob,
    by: &Actor,
) -> Result<(), sqlx::Error> {
    let event = events::ClassifierModelTrained {
        model_id: model.id.clone(),
        actor: Some(by.clone()),
        occur_time: model.create_time,
        model: Some(model.clone()),
        job: Some(job.clone()),
    };
    enqueue(conn, topics::CLASSIFIER, &model.id, &event).await.map(drop)
}
