//! Writing events into the outbox, inside the caller's transaction.

use crate::telemetry::propagation;
use sqlx::PgConnection;
use uuid::Uuid;

/// Records `message` for publication on `topic` with `key` (the aggregate id, which keeps one
/// aggregate's events ordered on one partition). Call it with the same transaction that
/// changes the state the event describes: the event is published if and only if that
/// transaction commits. Returns the event id (the CloudEvents `ce_id`).
pub async fn enqueue<M>(
    conn: &mut PgConnection,
    topic: &str,
    key: &str,
    message: &M,
) -> Result<Uuid, sqlx::Error>
where
    M: prost::Message + prost::Name,
{
    // Version 7 ids sort by creation time, which keeps the unique index append-mostly.
    let event_id = Uuid::now_v7();
    let trace = serde_json::to_value(propagation::current_context_fields()).unwrap_or_default();
    // One round trip for both. NOTIFY is transactional: the relay is woken when (and only
    // if) the caller commits, and repeated notifications in one transaction fold into one.
    sqlx::query(
        "WITH inserted AS ( \
             INSERT INTO outbox (event_id, topic, event_key, event_type, payload, trace_context) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id) \
         SELECT pg_notify(current_schema() || '_outbox', '') FROM inserted",
    )
    .bind(event_id)
    .bind(topic)
    .bind(key)
    .bind(M::full_name())
    .bind(message.encode_to_vec())
    .bind(trace)
    .execute(&mut *conn)
    .await?;
    Ok(event_id)
}
