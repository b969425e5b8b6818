//! Consuming events at most once in effect: each event's id is recorded in the consumer's
//! inbox in the same transaction as the handler's effects, so a redelivered event (after a
//! relay retry, a rebalance or a crash before the offset commit) changes nothing. Offsets are
//! committed only after that transaction, so nothing is lost either.
//!
//! Handler failures are of two kinds. A [`HandlerError::Transient`] one (the database is
//! down) is retried with backoff on the same event, and the partition waits. A
//! [`HandlerError::Permanent`] one (a payload that never decodes) would block the partition
//! forever if retried, so the event is dead-lettered instead: recorded in `dead_letters` with
//! the reason, republished on `<topic>.dlq` through the outbox, counted, and the consumer moves
//! on. See [`super::dead_letters`] for listing and replaying them.

use super::cloudevents;
use super::topics::client_config;
use crate::config::KafkaConfig;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::propagation;
use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// One event as a handler sees it.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    /// CloudEvents id; the deduplication key.
    pub id: String,
    /// Fully qualified protobuf message name of the payload.
    pub event_type: String,
    pub source: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Why an event could not be decoded as the requested message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event is a {actual}, not a {expected}")]
    WrongType { expected: String, actual: String },
    #[error("payload does not decode: {0}")]
    Payload(#[from] prost::DecodeError),
}

impl ReceivedEvent {
    /// Whether the payload is an `M`.
    pub fn is<M: prost::Name>(&self) -> bool {
        self.event_type == M::full_name()
    }

    /// Decodes the payload, refusing a payload of another type.
    pub fn decode<M: prost::Message + prost::Name + Default>(&self) -> Result<M, DecodeError> {
        if !self.is::<M>() {
            return Err(DecodeError::WrongType { expected: M::full_name(), actual: self.event_type.clone() });
        }
        Ok(M::decode(self.payload.as_slice())?)
    }

    /// `topic_prefix` is taken off the topic's name, so handlers see the plain one.
    fn from_message(message: &BorrowedMessage<'_>, topic_prefix: &str) -> Self {
        let headers = cloudevents::read(message.headers());
        // An event without an id (not written by an outbox) is deduplicated by position.
        let id = headers
            .get(cloudevents::ID)
            .cloned()
            .unwrap_or_else(|| format!("{}/{}/{}", message.topic(), message.partition(), message.offset()));
        Self {
            id,
            event_type: headers.get(cloudevents::TYPE).cloned().unwrap_or_default(),
            source: headers.get(cloudevents::SOURCE).cloned().unwrap_or_default(),
            topic: message.topic().strip_prefix(topic_prefix).unwrap_or(message.topic()).to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().and_then(|k| std::str::from_utf8(k).ok()).map(str::to_owned),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        }
    }
}

/// A handler failure. Handlers should treat events they have no use for (unknown types) as
/// success, not as an error.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying: the event is retried with backoff until it succeeds.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help: the event is dead-lettered and the consumer moves on.
    #[error("{0}")]
    Permanent(String),
}

impl HandlerError {
    pub fn transient(reason: impl std::fmt::Display) -> Self {
        Self::Transient(reason.to_string())
    }

    pub fn permanent(reason: impl std::fmt::Display) -> Self {
        Self::Permanent(reason.to_string())
    }
}

/// Database errors are transient (the server may be restarting), except those that say the
/// data itself is wrong (SQLSTATE class 22) and so would fail again on every retry.
impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        let data_error =
            error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code.starts_with("22"));
        if data_error { Self::permanent(error) } else { Self::transient(error) }
    }
}

/// A payload that does not decode today never will.
impl From<DecodeError> for HandlerError {
    fn from(error: DecodeError) -> Self {
        Self::permanent(error)
    }
}

/// Applies an event's effects using `conn`, the transaction that also records the event as
/// processed.
pub trait EventHandler: Send + Sync {
    fn handle(
        &self,
        conn: &mut PgConnection,
        event: &ReceivedEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Whether an event was applied, recognised as already applied, or set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    DeadLettered,
}

/// A consumer group member that feeds events to a handler through the inbox.
pub struct InboxConsumer {
    consumer: StreamConsumer,
    pool: PgPool,
    name: String,
    topic_prefix: String,
    dead_lettered: Counter,
    /// Kept to create the `<topic>.dlq` topics when the consumer starts.
    config: KafkaConfig,
    topics: Vec<String>,
}

impl std::fmt::Debug for InboxConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxConsumer").field("name", &self.name).finish_non_exhaustive()
    }
}

impl InboxConsumer {
    /// `name` is both the consumer group and the inbox's consumer key: instances sharing it
    /// share the work and the deduplication.
    pub fn new(pool: PgPool, config: &KafkaConfig, name: &str, topics: &[&str]) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer = client_config(config, name)
            .set("group.id", name)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .create()?;
        let on_broker: Vec<String> = topics.iter().map(|topic| config.topic(topic)).collect();
        consumer.subscribe(&on_broker.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(Self {
            consumer,
            pool,
            name: name.to_owned(),
            topic_prefix: config.topic_prefix.clone(),
            dead_lettered: Counter::default(),
            config: config.clone(),
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
        })
    }

    /// The consumer as a required background task of a [`crate::server::ServiceHost`]: a new
    /// consumer (same group, same inbox) replaces one that stopped, and the service is
    /// `NOT_SERVING` meanwhile.
    pub fn task<H>(
        pool: PgPool,
        config: &KafkaConfig,
        name: &str,
        topics: &[&str],
        handler: H,
        metrics: &Metrics,
    ) -> crate::server::Background
    where
        H: EventHandler + Clone + 'static,
    {
        let dead_lettered = Counter::default();
        metrics.register_labelled(
            "inbox_dead_lettered",
            "Events set aside because their handler failed permanently",
            ("consumer", name),
            dead_lettered.clone(),
        );
        let config = config.clone();
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let group = name.to_owned();
        crate::server::Background::required(format!("inbox {name}"), move |stop| {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            let consumer = Self::new(pool.clone(), &config, &group, &topics)
                .map(|consumer| Self { dead_lettered: dead_lettered.clone(), ..consumer });
            let handler = handler.clone();
            async move {
                consumer?.run(handler, stop).await;
                Ok(())
            }
        })
    }

    /// Counts dead-lettered events on `/metrics` (`codingagent_inbox_dead_lettered`).
    pub fn with_metrics(self, metrics: &Metrics) -> Self {
        metrics.register(
            "inbox_dead_lettered",
            "Events set aside because their handler failed permanently",
            self.dead_lettered.clone(),
        );
        self
    }

    /// Consumes until `shutdown`. A transient failure is retried with backoff on the same
    /// event (the partition waits rather than skipping it); a permanent one dead-letters it.
    pub async fn run<H: EventHandler>(self, handler: H, shutdown: CancellationToken) {
        let dlq: Vec<String> =
            self.topics.iter().map(|topic| format!("{topic}{}", super::dead_letters::DLQ_SUFFIX)).collect();
        if let Err(error) =
            super::topics::ensure(&self.config, &dlq.iter().map(String::as_str).collect::<Vec<_>>()).await
        {
            tracing::warn!(consumer = %self.name, %error, "cannot create dead-letter topics now");
        }
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return,
                message = self.consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(consumer = %self.name, %error, "kafka receive failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let event = ReceivedEvent::from_message(&message, &self.topic_prefix);
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.process(&handler, &event).await {
                    Ok(_) => break,
                    Err(HandlerError::Permanent(reason)) => match self.dead_letter(&event, &reason).await {
                        Ok(_) => break,
                        Err(error) => {
                            tracing::warn!(consumer = %self.name, event_id = %event.id, %error, "dead-lettering failed; retrying");
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                () = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    },
                    Err(error) => {
                        tracing::warn!(consumer = %self.name, event_id = %event.id, %error, "event handling failed; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
            if let Err(error) = self.consumer.commit_message(&message, CommitMode::Async) {
                // The inbox makes the redelivery this may cause harmless.
                tracing::warn!(consumer = %self.name, %error, "offset commit failed");
            }
        }
    }

    /// Applies one event unless the inbox already holds it.
    pub async fn process<H: EventHandler>(
        &self,
        handler: &H,
        event: &ReceivedEvent,
    ) -> Result<Outcome, HandlerError> {
        let span = tracing::info_span!("event", otel.name = %event.event_type, event_id = %event.id, consumer = %self.name);
        propagation::set_parent(&span, propagation::extract_fields(&event.headers));
        async {
            let mut tx = self.pool.begin().await?;
            if !self.claim(&mut tx, event).await? {
                tracing::debug!("duplicate event ignored");
                return Ok(Outcome::Duplicate);
            }
            handler.handle(&mut tx, event).await?;
            tx.commit().await?;
            Ok(Outcome::Applied)
        }
        .instrument(span)
        .await
    }

    /// Records `event` in the inbox inside `conn`'s transaction; `false` when it was already
    /// there (a redelivery).
    async fn claim(&self, conn: &mut PgConnection, event: &ReceivedEvent) -> Result<bool, sqlx::Error> {
        let inserted = sqlx::query(
            "INSERT INTO inbox (consumer, event_id, topic, kafka_partition, kafka_offset) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&self.name)
        .bind(&event.id)
        .bind(&event.topic)
        .bind(event.partition)
        .bind(event.offset)
        .execute(conn)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Sets `event` aside for good: the inbox row (so a redelivery is a duplicate), the dead
    /// letter and its `<topic>.dlq` copy commit together.
    pub async fn dead_letter(&self, event: &ReceivedEvent, reason: &str) -> Result<Outcome, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !self.claim(&mut tx, event).await? {
            return Ok(Outcome::Duplicate);
        }
        super::dead_letters::record(&mut tx, &self.name, event, reason).await?;
        tx.commit().await?;
        self.dead_lettered.inc();
        tracing::error!(consumer = %self.name, event_id = %event.id, topic = %event.topic, %reason, "event dead-lettered");
        Ok(Outcome::DeadLettered)
    }
}
