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
    OutboxEvent::new(topic, key, message).insert(conn).await
}

/// Ends a statement that contains [`OutboxEvent::cte`]. NOTIFY is transactional: the relay is
/// woken when (and only if) the statement's transaction commits, and repeated notifications
/// in one transaction fold into one.
pub const NOTIFY_SELECT: &str = "SELECT pg_notify(current_schema() || '_outbox', '') FROM outbox_event";

/// An event prepared for the outbox, for callers that write it in the same statement as the
/// state change: a single statement is atomic on its own, so the change and its event need
/// one round trip and no explicit transaction.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub event_id: Uuid,
    topic: String,
    key: String,
    event_type: String,
    payload: Vec<u8>,
    trace: serde_json::Value,
}

impl OutboxEvent {
    pub fn new<M: prost::Message + prost::Name>(topic: &str, key: &str, message: &M) -> Self {
        Self {
            // Version 7 ids sort by creation time, which keeps the unique index append-mostly.
            event_id: Uuid::now_v7(),
            topic: topic.to_owned(),
            key: key.to_owned(),
            event_type: M::full_name(),
            payload: message.encode_to_vec(),
            trace: serde_json::to_value(propagation::current_context_fields()).unwrap_or_default(),
        }
    }

    /// An event whose payload is already encoded (dead letters and their replays), with
    /// `headers` sent as Kafka headers beside the CloudEvents ones.
    pub fn raw(
        topic: &str,
        key: &str,
        event_type: &str,
        payload: Vec<u8>,
        headers: &std::collections::HashMap<String, String>,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            topic: topic.to_owned(),
            key: key.to_owned(),
            event_type: event_type.to_owned(),
            payload,
            trace: serde_json::to_value(headers).unwrap_or_default(),
        }
    }

    /// Keeps an earlier event's id, so consumers that applied it already see a duplicate.
    pub fn with_id(self, event_id: Uuid) -> Self {
        Self { event_id, ..self }
    }

    /// Writes the event on its own statement, in the caller's transaction.
    pub async fn insert(self, conn: &mut PgConnection) -> Result<Uuid, sqlx::Error> {
        let event_id = self.event_id;
        let sql = format!("WITH {} {NOTIFY_SELECT}", Self::cte(1));
        self.bind(sqlx::query(&sql)).execute(conn).await?;
        Ok(event_id)
    }

    /// A common table expression named `outbox_event` that inserts the event from the six
    /// parameters starting at `$first`; bind them with [`Self::bind`] in that position and
    /// end the statement with [`NOTIFY_SELECT`].
    pub fn cte(first: usize) -> String {
        let p: Vec<String> = (first..first + 6).map(|n| format!("${n}")).collect();
        format!(
            "outbox_event AS (INSERT INTO outbox (event_id, topic, event_key, event_type, payload, trace_context) \
             VALUES ({}) RETURNING id)",
            p.join(", ")
        )
    }

    /// Binds the event's six parameters, after whatever `query` has bound already.
    pub fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(self.event_id)
            .bind(self.topic)
            .bind(self.key)
            .bind(self.event_type)
            .bind(self.payload)
            .bind(self.trace)
    }
}
