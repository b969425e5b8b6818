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
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prost::Message as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use uuid::Uuid;

const EPOCH_KEY: &str = "chat:recent-epoch";

/// Where a newest-page read was served from.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Served {
    source: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Cache,
    Database,
}

#[derive(Debug, Clone)]
pub(crate) struct RecentMessages {
    redis: RedisClient,
    ttl_secs: i64,
    pub size: usize,
    hits: Counter,
    misses: Counter,
    dirty: Arc<AtomicBool>,
    latency: Family<Served, Histogram>,
}

/// The validity of an entry: (epoch, generation).
pub(crate) type Stamp = (i64, i64);

fn entry_key(conversation: Uuid) -> String {
    format!("chat:recent:{conversation}")
}

fn generation_key(conversation: Uuid) -> String {
    format!("chat:recent-gen:{conversation}")
}

/// An entry's contents: the conversation (for the access check) and its newest messages.
pub(crate) type Entry = (pb::Conversation, Vec<pb::Message>);

/// An entry: the stamp it was built at (two big-endian i64), the length-delimited
/// conversation, then the encoded page.
fn encode(stamp: Stamp, conversation: &pb::Conversation, messages: &[pb::Message]) -> Vec<u8> {
    let page = pb::ListMessagesResponse { messages: messages.to_vec(), next_page_token: String::new() };
    let mut bytes = stamp.0.to_be_bytes().to_vec();
    bytes.extend_from_slice(&stamp.1.to_be_bytes());
    conversation.encode_length_delimited(&mut bytes).unwrap_or_default();
    page.encode(&mut bytes).unwrap_or_default();
    bytes
}

fn decode(bytes: &[u8]) -> Option<(Stamp, Entry)> {
    let (epoch, rest) = bytes.split_at_checked(8)?;
    let (generation, mut rest) = rest.split_at_checked(8)?;
    let stamp = (i64::from_be_bytes(epoch.try_into().ok()?), i64::from_be_bytes(generation.try_into().ok()?));
    let conversation = pb::Conversation::decode_length_delimited(&mut rest).ok()?;
    Some((stamp, (conversation, pb::ListMessagesResponse::decode(rest).ok()?.messages)))
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
            // 50 µs to about 0.8 s.
            latency: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_05, 2.0, 15))),
        };
        metrics.register("chat_recent_cache_hits", "Latest-page reads served from Redis", cache.hits.clone());
        metrics.register(
            "chat_recent_cache_misses",
            "Latest-page reads that went to PostgreSQL",
            cache.misses.clone(),
        );
        metrics.register(
            "chat_latest_page_seconds",
            "Time to fetch and authorize a newest-page read, by where it was served from",
            cache.latency.clone(),
        );
        cache
    }

    /// Records how long a newest-page read took from `source`.
    pub(crate) fn observe(&self, source: Source, took: std::time::Duration) {
        let source = match source {
            Source::Cache => "cache",
            Source::Database => "database",
        };
        self.latency.get_or_create(&Served { source }).observe(took.as_secs_f64());
    }

    /// The cached newest messages (ascending seq), if the entry is current; otherwise the
    /// stamp to build a new entry at (`None` when the cache cannot be trusted now).
    pub(crate) async fn get(&self, conversation: Uuid) -> Result<Entry, Option<Stamp>> {
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
            Some((built_at, entry)) if built_at == current => {
                self.hits.inc();
                Ok(entry)
            }
            _ => {
                self.misses.inc();
                Err(Some(current))
            }
        }
    }

    /// Stores the conversation and its newest messages, read from the database after
    /// `stamp` was current.
    pub(crate) async fn put(
        &self,
        id: Uuid,
        stamp: Stamp,
        conversation: &pb::Conversation,
        messages: &[pb::Message],
    ) {
        let entry = encode(stamp, conversation, messages);
        let stored: Result<(), _> =
            self.redis.set(entry_key(id), entry, Some(Expiration::EX(self.ttl_secs)), None, false).await;
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
        let conversation =
            pb::Conversation { owner: "alice".into(), member_ids: vec!["bob".into()], ..Default::default() };
        let entry = (conversation.clone(), messages.clone());
        assert_eq!(decode(&encode((3, 42), &conversation, &messages)), Some(((3, 42), entry)));
        assert_eq!(decode(b"short"), None);
    }
}
