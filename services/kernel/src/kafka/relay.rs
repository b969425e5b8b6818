//! Publishes committed outbox rows to Kafka, keeping each key's (aggregate's) order.
//!
//! One round takes the schema's relay lock, claims the oldest unsent rows, publishes them
//! with the idempotent producer and marks them sent, all in one transaction. A crash after
//! publishing but before the commit leaves the rows unsent, and they are published again;
//! consumers deduplicate by event id. While the broker is unreachable, rounds fail and are
//! retried with exponential backoff; nothing is dropped.
//!
//! Order per key holds under failures and with several replicas:
//! - Only one relay per schema publishes at a time (a transaction-scoped advisory lock; the
//!   others skip the round). Two relays claiming disjoint rows could otherwise publish one
//!   key's second event before its first. Replicas therefore give failover, not throughput;
//!   one relay publishes thousands of events a second.
//! - A round publishes in waves, each holding at most one row per key, oldest first. When a
//!   row fails, its key's later rows are not published in that round, so nothing overtakes
//!   the failed row, which the next round retries first.

use super::cloudevents::{self, Attributes};
use super::topics::client_config;
use crate::config::KafkaConfig;
use crate::telemetry::metrics::Metrics;
use chrono::{DateTime, SecondsFormat, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// An outbox row claimed for publication.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: Uuid,
    pub topic: String,
    pub key: String,
    pub event_type: String,
    pub payload: Vec<u8>,
    pub trace_context: HashMap<String, String>,
    pub created_at: DateTime<Utc>,
}

/// Why a relay round failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Moves events from one service's outbox to Kafka.
#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    config: KafkaConfig,
    source: String,
    metrics: RelayMetrics,
}

/// The relay's health in numbers: how far behind it is and how often the broker refuses.
#[derive(Debug, Clone, Default)]
struct RelayMetrics {
    pending: Gauge,
    published: Counter,
    failed_rounds: Counter,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("source", &self.source).finish_non_exhaustive()
    }
}

impl Relay {
    /// `service` names the producer in the CloudEvents `ce_source` (`/codingagent/<service>`).
    pub fn new(pool: PgPool, config: &KafkaConfig, service: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: producer(config, service)?,
            pool,
            config: config.clone(),
            source: format!("/codingagent/{service}"),
            metrics: RelayMetrics::default(),
        })
    }

    /// Reports `outbox_pending`, `outbox_published` and `outbox_failed_rounds` on `metrics`.
    pub fn with_metrics(self, metrics: &Metrics) -> Self {
        metrics.register(
            "outbox_pending",
            "Committed events not yet published",
            self.metrics.pending.clone(),
        );
        metrics.register("outbox_published", "Events published to Kafka", self.metrics.published.clone());
        metrics.register(
            "outbox_failed_rounds",
            "Relay rounds that failed and were retried",
            self.metrics.failed_rounds.clone(),
        );
        self
    }

    /// The relay as a required background task of a [`crate::server::ServiceHost`]: restarted
    /// if it ever stops, and the service is `NOT_SERVING` meanwhile.
    pub fn task(self) -> crate::server::Background {
        crate::server::Background::required("outbox-relay", move |stop| {
            let relay = self.clone();
            async move {
                relay.run(stop).await;
                Ok(())
            }
        })
    }

    /// Runs rounds until `shutdown`, waking on the outbox notification or every poll interval,
    /// then publishes what is left (bounded by the delivery timeout) and flushes the producer.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut listener = self.listen().await;
        let mut backoff = Duration::ZERO;
        loop {
            let round = self.relay_once().await;
            if let Ok(pending) = pending(&self.pool).await {
                self.metrics.pending.set(pending);
            }
            match round {
                // A full batch means more rows are probably waiting.
                Ok(count) if count as i64 >= self.config.relay_batch_size => continue,
                Ok(_) => backoff = Duration::ZERO,
                Err(error) => {
                    self.metrics.failed_rounds.inc();
                    backoff = (backoff * 2).clamp(
                        Duration::from_millis(100),
                        Duration::from_millis(self.config.relay_max_backoff_ms),
                    );
                    tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "outbox relay round failed");
                    self.recover_producer();
                }
            }
            let wait =
                if backoff.is_zero() { Duration::from_millis(self.config.relay_poll_ms) } else { backoff };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                notified = wait_for_notification(&mut listener), if backoff.is_zero() => {
                    if !notified { listener = None; }
                }
            }
        }
        self.drain().await;
    }

    async fn listen(&self) -> Option<PgListener> {
        let schema: Result<String, _> =
            sqlx::query_scalar("SELECT current_schema()").fetch_one(&self.pool).await;
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener.listen(&format!("{}_outbox", schema.ok()?)).await.ok()?;
        Some(listener)
    }

    /// Publishes what is still unsent at shutdown, within one delivery timeout.
    async fn drain(&self) {
        let deadline = Duration::from_millis(self.config.delivery_timeout_ms);
        let drained = tokio::time::timeout(deadline, async {
            while matches!(self.relay_once().await, Ok(n) if n > 0) {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("outbox not drained before shutdown; the next start publishes the rest");
        }
        if let Err(error) = self.producer.flush(deadline) {
            tracing::warn!(%error, "kafka producer not flushed");
        }
    }

    /// A producer in a fatal state (possible with idempotence after some broker errors) never
    /// recovers; replace it.
    fn recover_producer(&mut self) {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::error!(?code, reason, "kafka producer failed fatally; recreating it");
            match producer(&self.config, self.source.trim_start_matches("/codingagent/")) {
                Ok(fresh) => self.producer = fresh,
                Err(error) => tracing::error!(%error, "cannot recreate kafka producer"),
            }
        }
    }

    /// One round: lock, claim, publish in order, mark, commit. Returns how many rows were
    /// published (0 also when another relay holds the lock).
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtextextended(current_schema() || '.outbox_relay', 0))",
        )
        .fetch_one(&mut *tx)
        .await?;
        if !locked {
            return Ok(0);
        }
        let rows = claim(&mut tx, self.config.relay_batch_size).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let (sent, first_error) = self.publish_in_order(&rows).await;
        mark_sent(&mut tx, &sent).await?;
        if let Some(error) = &first_error {
            record_failure(&mut tx, &rows, &sent, error).await?;
        }
        tx.commit().await?;
        self.metrics.published.inc_by(sent.len() as u64);
        match first_error {
            Some(error) => Err(error.into()),
            None => Ok(sent.len()),
        }
    }

    /// Publishes `rows` (oldest first) in waves of at most one row per key; a key whose row
    /// failed publishes nothing more this round. Returns the ids published and the first error.
    pub async fn publish_in_order(&self, rows: &[OutboxRow]) -> (Vec<i64>, Option<KafkaError>) {
        let key = |row: &OutboxRow| (row.topic.clone(), row.key.clone());
        let mut waves: Vec<Vec<&OutboxRow>> = Vec::new();
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for row in rows {
            let wave = seen.entry(key(row)).or_insert(0);
            if waves.len() <= *wave {
                waves.push(Vec::new());
            }
            waves[*wave].push(row);
            *wave += 1;
        }
        let (mut sent, mut failed, mut first_error) = (Vec::new(), HashSet::new(), None);
        for wave in waves {
            let wave: Vec<&OutboxRow> = wave.into_iter().filter(|row| !failed.contains(&key(row))).collect();
            for (row, result) in wave.iter().zip(self.send(wave.iter().copied()).await) {
                match result {
                    Ok(()) => sent.push(row.id),
                    Err(error) => {
                        failed.insert(key(row));
                        first_error.get_or_insert(error);
                    }
                }
            }
        }
        (sent, first_error)
    }

    /// Publishes `rows` concurrently and waits for every acknowledgement (`acks=all`).
    pub async fn publish(&self, rows: &[OutboxRow]) -> Vec<Result<(), KafkaError>> {
        self.send(rows.iter()).await
    }

    async fn send<'r>(&self, rows: impl Iterator<Item = &'r OutboxRow>) -> Vec<Result<(), KafkaError>> {
        let timeout = Duration::from_millis(self.config.delivery_timeout_ms);
        let sends = rows.map(|row| {
            let attributes = Attributes {
                id: row.event_id.to_string(),
                event_type: row.event_type.clone(),
                source: self.source.clone(),
                time: row.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            };
            let topic = self.config.topic(&row.topic);
            async move {
                let record = FutureRecord::to(&topic)
                    .key(&row.key)
                    .payload(&row.payload)
                    .headers(cloudevents::headers(&attributes, &row.trace_context));
                self.producer.send(record, timeout).await.map(drop).map_err(|(error, _)| error)
            }
        });
        futures::future::join_all(sends).await
    }
}

fn producer(config: &KafkaConfig, service: &str) -> Result<FutureProducer, KafkaError> {
    client_config(config, &format!("codingagent-{service}-relay"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", config.delivery_timeout_ms.to_string())
        .set("linger.ms", "5")
        .create()
}

/// `true` when woken by a notification; `false` when the listener is gone (then the relay
/// falls back to polling). Without a listener this never resolves.
async fn wait_for_notification(listener: &mut Option<PgListener>) -> bool {
    match listener {
        Some(listener) => listener.recv().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Locks up to `limit` unsent rows, oldest first, skipping rows another relay holds.
pub async fn claim(conn: &mut PgConnection, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, event_id, topic, event_key, event_type, payload, trace_context, created_at \
         FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let trace: serde_json::Value = row.try_get("trace_context")?;
            Ok(OutboxRow {
                id: row.try_get("id")?,
                event_id: row.try_get("event_id")?,
                topic: row.try_get("topic")?,
                key: row.try_get("event_key")?,
                event_type: row.try_get("event_type")?,
                payload: row.try_get("payload")?,
                trace_context: serde_json::from_value(trace).unwrap_or_default(),
                created_at: row.try_get("created_at")?,
            })
        })
        .collect()
}

/// Marks rows as published.
pub async fn mark_sent(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    if !ids.is_empty() {
        sqlx::query("UPDATE outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = ANY($1)")
            .bind(ids)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn record_failure(
    conn: &mut PgConnection,
    rows: &[OutboxRow],
    sent: &[i64],
    error: &KafkaError,
) -> Result<(), sqlx::Error> {
    let failed: Vec<i64> = rows.iter().map(|r| r.id).filter(|id| !sent.contains(id)).collect();
    sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)")
        .bind(&failed)
        .bind(error.to_string())
        .execute(&mut *conn)
        .await
        .map(drop)
}

/// Rows not yet published, for the outbox-lag metric and tests.
pub async fn pending(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetch_one(pool).await
}
