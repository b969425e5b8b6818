//! Events a consumer set aside because its handler failed permanently (see
//! [`super::inbox`]): recording them, listing them, and replaying one once the cause is fixed.
//!
//! A dead letter is also republished on `<topic>.dlq` (through the outbox, in the same
//! transaction), so tools that watch Kafka see it; the table is what an operator works from.
//! A replay puts the original event back on its topic under its original id: the consumer
//! that dead-lettered it has its inbox row removed and applies it again, while every other
//! consumer group already holds that id in its inbox and drops it as a duplicate.

use super::inbox::ReceivedEvent;
use super::outbox::OutboxEvent;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use uuid::Uuid;

/// Suffix of the topic that carries a topic's dead letters.
pub const DLQ_SUFFIX: &str = ".dlq";

/// Headers a `<topic>.dlq` record carries beside the original trace context.
pub const REASON_HEADER: &str = "codingagent_dlq_reason";
pub const CONSUMER_HEADER: &str = "codingagent_dlq_consumer";
pub const ORIGINAL_ID_HEADER: &str = "codingagent_dlq_event_id";

/// Reasons are cut to this many characters (an error can quote a whole payload).
const MAX_REASON: usize = 2_000;

/// One dead letter as an operator sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub consumer: String,
    pub event_id: String,
    pub topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub event_type: String,
    pub event_key: Option<String>,
    pub reason: String,
    pub failed_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
}

/// What a replay needs of a dead letter.
#[derive(sqlx::FromRow)]
struct Stored {
    consumer: String,
    event_id: String,
    topic: String,
    event_type: String,
    event_key: Option<String>,
    payload: Vec<u8>,
    headers: serde_json::Value,
    replayed_at: Option<DateTime<Utc>>,
}

/// Why a replay did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("dead letter {0} does not exist")]
    NotFound(i64),
    #[error("dead letter {0} was already replayed")]
    AlreadyReplayed(i64),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Inside the consumer's transaction: records the dead letter and its `<topic>.dlq` copy.
pub(crate) async fn record(
    conn: &mut PgConnection,
    consumer: &str,
    event: &ReceivedEvent,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let reason: String = reason.chars().filter(|c| *c != '\0').take(MAX_REASON).collect();
    let headers = serde_json::to_value(&event.headers).unwrap_or_default();
    sqlx::query(
        "INSERT INTO dead_letters (consumer, event_id, topic, kafka_partition, kafka_offset, event_type, \
         event_key, payload, headers, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(&event.id)
    .bind(&event.topic)
    .bind(event.partition)
    .bind(event.offset)
    .bind(&event.event_type)
    .bind(&event.key)
    .bind(&event.payload)
    .bind(headers)
    .bind(&reason)
    .execute(&mut *conn)
    .await?;
    let mut dlq_headers: HashMap<String, String> = event
        .headers
        .iter()
        .filter(|(name, _)| !name.starts_with("ce_") && name.as_str() != "content-type")
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    dlq_headers.insert(REASON_HEADER.into(), reason);
    dlq_headers.insert(CONSUMER_HEADER.into(), consumer.into());
    dlq_headers.insert(ORIGINAL_ID_HEADER.into(), event.id.clone());
    let topic = format!("{}{DLQ_SUFFIX}", event.topic);
    OutboxEvent::raw(
        &topic,
        event.key.as_deref().unwrap_or_default(),
        &event.event_type,
        event.payload.clone(),
        &dlq_headers,
    )
    .insert(conn)
    .await?;
    Ok(())
}

/// Dead letters newest first, optionally of one consumer, at most `limit`.
pub async fn list(pool: &PgPool, consumer: Option<&str>, limit: i64) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, consumer, event_id, topic, kafka_partition, kafka_offset, event_type, event_key, reason, \
         failed_at, replayed_at FROM dead_letters WHERE ($1::text IS NULL OR consumer = $1) \
         ORDER BY id DESC LIMIT $2",
    )
    .bind(consumer)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Puts dead letter `id` back on its topic for its consumer to apply again, once.
pub async fn replay(pool: &PgPool, id: i64) -> Result<Uuid, ReplayError> {
    let mut tx = pool.begin().await?;
    let stored: Option<Stored> = sqlx::query_as(
        "SELECT consumer, event_id, topic, event_type, event_key, payload, headers, replayed_at \
         FROM dead_letters WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Stored { consumer, event_id, topic, event_type, event_key: key, payload, headers, replayed_at }) =
        stored
    else {
        return Err(ReplayError::NotFound(id));
    };
    if replayed_at.is_some() {
        return Err(ReplayError::AlreadyReplayed(id));
    }
    sqlx::query("DELETE FROM inbox WHERE consumer = $1 AND event_id = $2")
        .bind(&consumer)
        .bind(&event_id)
        .execute(&mut *tx)
        .await?;
    // Only the trace context travels again; the CloudEvents attributes are the relay's.
    let headers: HashMap<String, String> = serde_json::from_value::<HashMap<String, String>>(headers)
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| name == "traceparent" || name == "tracestate")
        .collect();
    let mut event =
        OutboxEvent::raw(&topic, key.as_deref().unwrap_or_default(), &event_type, payload, &headers);
    // Events not written by an outbox carry no UUID id, and an id this schema's own outbox
    // already used cannot be reused; those get a new one.
    if let Ok(original) = Uuid::parse_str(&event_id) {
        let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox WHERE event_id = $1)")
            .bind(original)
            .fetch_one(&mut *tx)
            .await?;
        if !taken {
            event = event.with_id(original);
        }
    }
    let published = event.insert(&mut tx).await?;
    sqlx::query("UPDATE dead_letters SET replayed_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(published)
}
