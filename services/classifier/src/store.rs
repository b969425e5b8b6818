//! PostgreSQL access for classifications, feedback and samples. Models and training jobs are
//! in `registry.rs`.

use crate::corpus;
use crate::training::Sample;
use codingagent_kernel::kafka::{NOTIFY_SELECT, OutboxEvent};
use codingagent_proto::codingagent::classifier::v1 as pb;
use prost::Message;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// Sample sources, as `pb::SampleSource` numbers.
pub(crate) const SEED: i16 = pb::SampleSource::Seed as i16;
pub(crate) const FEEDBACK: i16 = pb::SampleSource::Feedback as i16;
pub(crate) const OUTCOME: i16 = pb::SampleSource::Outcome as i16;

/// Stores a classification and its `ClassificationMade` event in one statement.
pub(crate) async fn insert_classification(
    conn: &mut PgConnection,
    classification: &pb::Classification,
    id: Uuid,
    event: OutboxEvent,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "WITH stored AS (INSERT INTO classifications (id, owner, task_id, task_type, complexity, decided_by, \
         model_version, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)), {} {NOTIFY_SELECT}",
        OutboxEvent::cte(9)
    );
    let query = sqlx::query(&sql)
        .bind(id)
        .bind(&classification.owner)
        .bind(Some(&classification.task_id).filter(|t| !t.is_empty()))
        .bind(classification.task_type as i16)
        .bind(classification.complexity as i16)
        .bind(classification.decided_by as i16)
        .bind(Some(&classification.model_version).filter(|m| !m.is_empty()))
        .bind(classification.encode_to_vec());
    event.bind(query).execute(conn).await.map(drop)
}

/// A classification the caller may see, with its latest feedback; `None` when it does not
/// exist or belongs to someone else (the two are indistinguishable on purpose).
pub(crate) async fn classification(
    conn: &mut PgConnection,
    id: Uuid,
    owner: &str,
) -> Result<Option<pb::Classification>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT c.body, f.id AS feedback_id, f.created_at AS feedback_at, f.corrected_task_type, \
         f.corrected_complexity, f.comment \
         FROM classifications c LEFT JOIN LATERAL (SELECT * FROM feedback WHERE classification_id = c.id \
         ORDER BY created_at DESC, id DESC LIMIT 1) f ON true WHERE c.id = $1 AND c.owner = $2",
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let body: Vec<u8> = row.get("body");
    let mut classification =
        pb::Classification::decode(body.as_slice()).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    if let Some(feedback_id) = row.get::<Option<Uuid>, _>("feedback_id") {
        let at: chrono::DateTime<chrono::Utc> = row.get("feedback_at");
        classification.update_time = Some(crate::convert::timestamp(at));
        classification.feedback = Some(pb::Feedback {
            id: feedback_id.to_string(),
            classification_id: id.to_string(),
            owner: owner.to_owned(),
            create_time: Some(crate::convert::timestamp(at)),
            corrected_task_type: i32::from(row.get::<i16, _>("corrected_task_type")),
            corrected_complexity: i32::from(row.get::<i16, _>("corrected_complexity")),
            comment: row.get("comment"),
        });
    }
    Ok(Some(classification))
}

/// A feedback row to store.
#[derive(Debug)]
pub(crate) struct NewFeedback<'a> {
    pub id: Uuid,
    pub classification_id: Uuid,
    pub owner: &'a str,
    pub task_type: i32,
    pub complexity: i32,
    pub comment: &'a str,
}

/// Records feedback, and its sample, replacing the sample of any earlier correction of the
/// same classification. Returns the creation time.
pub(crate) async fn insert_feedback(
    conn: &mut PgConnection,
    feedback: &NewFeedback<'_>,
    sample: &Sample,
) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
    let created_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "INSERT INTO feedback (id, classification_id, owner, corrected_task_type, corrected_complexity, comment) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at",
    )
    .bind(feedback.id)
    .bind(feedback.classification_id)
    .bind(feedback.owner)
    .bind(feedback.task_type as i16)
    .bind(feedback.complexity as i16)
    .bind(feedback.comment)
    .fetch_one(&mut *conn)
    .await?;
    let key = format!("classification:{}", feedback.classification_id);
    let origin = feedback.id.to_string();
    insert_sample(conn, FEEDBACK, &origin, Some(&key), Some(feedback.owner), sample).await?;
    Ok(created_at)
}

/// Adds a sample once per (source, origin); a repeat is ignored. With `supersede_key`, the
/// current sample with that key is superseded first. `owner` is the user whose correction it
/// is, which bounds that user's part in a training run. Returns whether a sample was added.
pub(crate) async fn insert_sample(
    conn: &mut PgConnection,
    source: i16,
    origin: &str,
    supersede_key: Option<&str>,
    owner: Option<&str>,
    sample: &Sample,
) -> Result<bool, sqlx::Error> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM samples WHERE source = $1 AND origin = $2")
        .bind(source)
        .bind(origin)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_some() {
        return Ok(false);
    }
    if let Some(key) = supersede_key {
        sqlx::query(
            "UPDATE samples SET superseded_at = now() WHERE supersede_key = $1 AND superseded_at IS NULL",
        )
        .bind(key)
        .execute(&mut *conn)
        .await?;
    }
    let added = sqlx::query(
        "INSERT INTO samples (source, origin, supersede_key, owner, text, task_type, complexity, split) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (source, origin) DO NOTHING",
    )
    .bind(source)
    .bind(origin)
    .bind(supersede_key)
    .bind(owner)
    .bind(&sample.text)
    .bind(sample.task_type as i16 + 1)
    .bind(sample.complexity as i16 + 1)
    .bind(sample.split)
    .execute(&mut *conn)
    .await?;
    Ok(added.rows_affected() == 1)
}

/// Loads the shipped seed corpus, once: rows already there are skipped.
pub(crate) async fn seed_samples(pool: &PgPool, rows: &[corpus::Row]) -> Result<u64, sqlx::Error> {
    let mut added = 0;
    for chunk in rows.chunks(5_000) {
        let (mut origins, mut texts, mut types, mut complexities, mut splits) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for row in chunk {
            let sample = row.sample();
            // The text is part of the origin: one package version yields many samples.
            origins.push(format!("{}@{}:{:016x}", row.package, row.version, text_hash(&row.text)));
            texts.push(sample.text);
            types.push(sample.task_type as i16 + 1);
            complexities.push(sample.complexity as i16 + 1);
            splits.push(sample.split);
        }
        added += sqlx::query(
            "INSERT INTO samples (source, origin, text, task_type, complexity, split) \
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::smallint[], $5::smallint[], $6::float8[]) \
             ON CONFLICT (source, origin) DO NOTHING",
        )
        .bind(SEED)
        .bind(&origins)
        .bind(&texts)
        .bind(&types)
        .bind(&complexities)
        .bind(&splits)
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(added)
}

fn text_hash(text: &str) -> u64 {
    (corpus::stable_fraction(text) * (1u64 << 53) as f64) as u64
}

/// Counts for GetTrainingStats over current (not superseded) samples.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub total: i64,
    pub task_types: Vec<(i16, i64)>,
    pub complexities: Vec<(i16, i64)>,
    pub sources: Vec<(i16, i64)>,
}

pub(crate) async fn stats(pool: &PgPool) -> Result<Stats, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT 'type' AS kind, task_type AS label, count(*) AS n FROM samples WHERE superseded_at IS NULL GROUP BY task_type \
         UNION ALL SELECT 'complexity', complexity, count(*) FROM samples WHERE superseded_at IS NULL GROUP BY complexity \
         UNION ALL SELECT 'source', source, count(*) FROM samples WHERE superseded_at IS NULL GROUP BY source",
    )
    .fetch_all(pool)
    .await?;
    let mut stats = Stats::default();
    for row in rows {
        let entry = (row.get::<i16, _>("label"), row.get::<i64, _>("n"));
        match row.get::<&str, _>("kind") {
            "type" => {
                stats.total += entry.1;
                stats.task_types.push(entry);
            }
            "complexity" => stats.complexities.push(entry),
            _ => stats.sources.push(entry),
        }
    }
    Ok(stats)
}

/// Samples added after `since` (all when `None`).
pub(crate) async fn samples_since(
    pool: &PgPool,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM samples WHERE superseded_at IS NULL AND ($1::timestamptz IS NULL OR created_at > $1)",
    )
    .bind(since)
    .fetch_one(pool)
    .await
}

/// Freezes the current samples as a snapshot; returns its id and size. Of each user's feedback
/// samples only the newest `feedback_per_user` enter, so one user cannot flood a run.
pub(crate) async fn create_snapshot(
    conn: &mut PgConnection,
    feedback_per_user: u32,
) -> Result<(Uuid, i64), sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO snapshots (id, sample_count) VALUES ($1, 0)")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let count = sqlx::query(
        "INSERT INTO snapshot_samples (snapshot_id, sample_id) SELECT $1, id FROM ( \
           SELECT id, source, row_number() OVER (PARTITION BY source, owner ORDER BY id DESC) AS newest \
           FROM samples WHERE superseded_at IS NULL) current \
         WHERE source <> $2 OR newest <= $3",
    )
    .bind(id)
    .bind(FEEDBACK)
    .bind(i64::from(feedback_per_user))
    .execute(&mut *conn)
    .await?
    .rows_affected() as i64;
    sqlx::query("UPDATE snapshots SET sample_count = $2 WHERE id = $1")
        .bind(id)
        .bind(count)
        .execute(&mut *conn)
        .await?;
    Ok((id, count))
}

pub(crate) async fn snapshot_exists(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM snapshots WHERE id = $1)").bind(id).fetch_one(pool).await
}

/// The samples of a snapshot, in a fixed order so training is reproducible, each with the
/// user whose feedback it is (`None` for other sources).
pub(crate) async fn snapshot_samples(
    pool: &PgPool,
    id: Uuid,
) -> Result<(Vec<Sample>, Vec<Option<String>>), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT s.text, s.task_type, s.complexity, s.split, CASE WHEN s.source = $2 THEN s.owner END AS owner \
         FROM snapshot_samples x JOIN samples s ON s.id = x.sample_id WHERE x.snapshot_id = $1 ORDER BY s.id",
    )
    .bind(id)
    .bind(FEEDBACK)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let sample = Sample {
                text: row.get("text"),
                task_type: (row.get::<i16, _>("task_type") - 1).max(0) as usize,
                complexity: (row.get::<i16, _>("complexity") - 1).max(0) as usize,
                split: row.get("split"),
                weight: 1.0,
            };
            (sample, row.get("owner"))
        })
        .unzip())
}

/// The latest correction of the classification made for `task_id`, if the task's owner gave
/// one: a task's outcome sample uses the user's label over the classifier's. `task_id` on a
/// classification is whatever its caller sent, so only classifications and corrections by
/// the task's `owner` count; anyone else could otherwise label a stranger's task.
pub(crate) async fn corrected_labels(
    conn: &mut PgConnection,
    task_id: &str,
    owner: &str,
) -> Result<Option<(i16, i16)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT f.corrected_task_type, f.corrected_complexity FROM classifications c \
         JOIN feedback f ON f.classification_id = c.id AND f.owner = c.owner \
         WHERE c.task_id = $1 AND c.owner = $2 ORDER BY f.created_at DESC, f.id DESC LIMIT 1",
    )
    .bind(task_id)
    .bind(owner)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}
