//! The newest messages of each conversation in Redis, for the read every client does first:
//! "the latest page". Cache-aside with a per-conversation generation: every write bumps the
//! generation after it commits, and an entry is valid only for the generation it was built
//! at, so a reader that raced a write can never serve the older page afterwards. A write
//! that could not bump its generation (Redis was down) leaves this replica dirty; it bumps
//! the global epoch, which every entry also records, as soon as Redis answers, so nothing
//! cached before the outage is served after it. Entries expire after `cache_ttl_secs`, which
//! bounds memory. Redis being down only costs speed.

use codingagent_kernel::redis::RedisClient;
use codingagent_kernel::telemetry::metrics::Metrics;
use codingagent_proto::codingagent::chat::v1 as pb;
use fred::interfaces::KeysInterface;
use fred::types::{Expiration, Value};
use prometheus_client::metrics::counter::Counter;
use prost::Message as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use uuid::Uuid;

const EPOCH_KEY: &str = "chat:recent-epoch";

#[derive(Debug, Clone)]
pub(crate) struct RecentMessages {
    redis: RedisClient,
    ttl_secs: i64,
    pub size: usize,
    hits: Counter,
    misses: Counter,
    dirty: Arc<AtomicBool>,
}

/// The validity of an entry: (epoch, generation).
pub(crate) type Stamp = (i64, i64);

fn entry_key(conversation: Uuid) -> String {
    format!("chat:recent:{conversation}")
}

fn generation_key(conversation: Uuid) -> String {
    format!("chat:recent-gen:{conversation}")
}

/// An entry: the stamp it was built at (two big-endian i64), then the encoded page.
fn encode(stamp: Stamp, messages: &[pb::Message]) -> Vec<u8> {
    let page = pb::ListMessagesResponse { messages: messages.to_vec(), next_page_token: String::new() };
    let mut bytes = stamp.0.to_be_bytes().to_vec();
    bytes.extend_from_slice(&stamp.1.to_be_bytes());
    page.encode(&mut bytes).unwrap_or_default();
    bytes
}

fn decode(bytes: &[u8]) -> Option<(Stamp, Vec<pb::Message>)> {
    let (epoch, rest) = bytes.split_at_checked(8)?;
    let (generation, page) = rest.split_at_checked(8)?;
    let stamp = (i64::from_be_bytes(epoch.try_into().ok()?), i64::from_be_bytes(generation.try_into().ok()?));
    Some((stamp, pb::ListMessagesResponse::decode(page).ok()?.messages))
}

fn number(value: Option<&Value>) -> i64 {
    value.and_then(Value::as_i64).unwrap_or(0)
}

impl RecentMessages {
    pub(crate) fn new(redis: RedisClient, size: usize, ttl_secs: u64, metrics: &Metrics) -> Self {
        let cache = Self {
            redis,
            ttl_secs: ttl_secs as i64,
            size,
            hits: Counter::default(),
            misses: Counter::default(),
            dirty: Arc::default(),
        };
        metrics.register("chat_recent_cache_hits", "Latest-page reads served from Redis", cache.hits.clone());
        metrics.register(
            "chat_recent_cache_misses",
            "Latest-page reads that went to PostgreSQL",
            cache.misses.clone(),
        );
        cache
    }

    /// The cached newest messages (ascending seq), if the entry is current; otherwise the
    /// stamp to build a new entry at (`None` when the cache cannot be trusted now).
    pub(crate) async fn get(&self, conversation: Uuid) -> Result<Vec<pb::Message>, Option<Stamp>> {
        if self.dirty.load(Ordering::Acquire) && !self.bump_epoch().await {
            self.misses.inc();
            return Err(None);
        }
        let keys = vec![entry_key(conversation), EPOCH_KEY.to_owned(), generation_key(conversation)];
        let values: Result<Vec<Value>, _> = self.redis.mget(keys).await;
        let Ok(values) = values else {
            self.misses.inc();
            return Err(None);
        };
        let current = (number(values.get(1)), number(values.get(2)));
        match values.first().and_then(Value::as_bytes).and_then(decode) {
            Some((built_at, messages)) if built_at == current => {
                self.hits.inc();
                Ok(messages)
            }
            _ => {
                self.misses.inc();
                Err(Some(current))
            }
        }
    }

    /// Stores the newest messages, read from the database after `stamp` was current.
    pub(crate) async fn put(&self, conversation: Uuid, stamp: Stamp, messages: &[pb::Message]) {
        let stored: Result<(), _> = self
            .redis
            .set(
                entry_key(conversation),
                encode(stamp, messages),
                Some(Expiration::EX(self.ttl_secs)),
                None,
                false,
            )
            .await;
        if let Err(error) = stored {
            tracing::debug!(%error, "cannot fill the recent-messages cache");
        }
    }

    /// After a write commits: every entry built before it is stale.
    pub(crate) async fn invalidate(&self, conversation: Uuid) {
        let bumped: Result<i64, _> = self.redis.incr(generation_key(conversation)).await;
        match bumped {
            // The generation must outlive any entry built at an earlier one.
            Ok(_) => {
                let _: Result<i64, _> =
                    self.redis.expire(generation_key(conversation), self.ttl_secs * 2, None).await;
            }
            Err(error) => {
                tracing::debug!(%error, "cannot invalidate the recent-messages cache; will bump the epoch");
                self.dirty.store(true, Ordering::Release);
            }
        }
    }

    /// Invalidates every entry; true when done (or nothing was pending).
    async fn bump_epoch(&self) -> bool {
        let bumped: Result<i64, _> = self.redis.incr(EPOCH_KEY).await;
        if bumped.is_ok() {
            self.dirty.store(false, Ordering::Release);
        }
        bumped.is_ok()
    }

    /// Retries a pending epoch bump every second, so replicas that only read learn of an
    /// outage's writes promptly too.
    pub(crate) async fn run(self, stop: codingagent_kernel::CancellationToken) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    if self.dirty.load(Ordering::Acquire) {
                        self.bump_epoch().await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_with_their_generation() {
        let messages = vec![pb::Message { id: "m".into(), seq: 7, text: "hi".into(), ..Default::default() }];
        assert_eq!(decode(&encode((3, 42), &messages)), Some(((3, 42), messages)));
        assert_eq!(decode(b"short"), None);
    }
}
