//! Live delivery across replicas: every event a replica produces is published on the Redis
//! channel of its conversation; every replica subscribes to all of them on one connection and
//! hands each event to the streams it holds for that conversation. Redis pub/sub may drop
//! messages (a reconnect, a slow subscriber), so streams never trust it for completeness: they
//! check sequence numbers and fill gaps from PostgreSQL (`stream.rs`).

use codingagent_kernel::redis::{RedisClient, SubscriberClient};
use codingagent_proto::codingagent::chat::v1 as pb;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use prost::Message as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use uuid::Uuid;

const CHANNEL_PREFIX: &str = "chat:events:";
/// Events buffered per conversation for a slow stream before it lags (and refills from the
/// database).
const BUFFER: usize = 256;

pub(crate) type Event = Arc<pb::ConversationEvent>;

/// One replica's end of the fan-out.
#[derive(Debug, Clone)]
pub(crate) struct Fanout {
    publisher: RedisClient,
    local: Arc<Mutex<HashMap<Uuid, broadcast::Sender<Event>>>>,
}

impl Fanout {
    pub(crate) fn new(publisher: RedisClient) -> Self {
        Self { publisher, local: Arc::default() }
    }

    /// Receives every event of `conversation` published from now on, by any replica.
    pub(crate) fn subscribe(&self, conversation: Uuid) -> broadcast::Receiver<Event> {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        local.entry(conversation).or_insert_with(|| broadcast::channel(BUFFER).0).subscribe()
    }

    /// Publishes to every replica. When Redis is unavailable the event still reaches this
    /// replica's streams at once; other replicas' streams pick durable events up from the
    /// database at their next check.
    pub(crate) async fn publish(&self, conversation: Uuid, event: pb::ConversationEvent) {
        let channel = format!("{CHANNEL_PREFIX}{conversation}");
        let published: Result<i64, _> = self.publisher.publish(channel, event.encode_to_vec()).await;
        if let Err(error) = published {
            tracing::debug!(%error, "redis publish failed; delivering locally only");
            self.deliver(conversation, Arc::new(event));
        }
    }

    fn deliver(&self, conversation: Uuid, event: Event) {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = local.get(&conversation) {
            if sender.receiver_count() == 0 {
                // The last stream of this conversation here is gone.
                local.remove(&conversation);
            } else {
                let _ = sender.send(event);
            }
        }
    }

    /// Dispatches what the subscriber receives until the process stops.
    pub(crate) async fn run(self, subscriber: SubscriberClient, stop: codingagent_kernel::CancellationToken) {
        let mut messages = subscriber.message_rx();
        if let Err(error) = subscriber.psubscribe(format!("{CHANNEL_PREFIX}*")).await {
            // manage_subscriptions() subscribes again once Redis answers.
            tracing::warn!(%error, "cannot subscribe to chat events now");
        }
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => break,
                message = messages.recv() => message,
            };
            let message = match message {
                Ok(message) => message,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "chat fan-out lagged; streams refill from the database");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let Some(conversation) =
                message.channel.strip_prefix(CHANNEL_PREFIX).and_then(|id| Uuid::parse_str(id).ok())
            else {
                continue;
            };
            let Some(event) = message.value.as_bytes().and_then(|b| pb::ConversationEvent::decode(b).ok())
            else {
                continue;
            };
            self.deliver(conversation, Arc::new(event));
        }
        let _ = subscriber.quit().await;
    }
}
