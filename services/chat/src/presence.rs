//! Who is in a conversation, and who is typing — ephemeral state in Redis, shared by replicas.
//!
//! Presence: every open stream is a member `kind|id|connection` of the sorted set
//! `chat:presence:{conversation}`, scored by when it lapses; its stream renews it every third
//! of `presence_ttl_secs` and removes it on close. A replica that dies simply stops renewing:
//! the other streams in the conversation sweep lapsed members out when they renew their own,
//! and report who went offline that way. `chat:seen:{conversation}` scores each participant
//! by when they were last seen, which is how recently-left participants are listed as AWAY
//! for five minutes.
//! Typing: a rate-limit key per caller and conversation; the signal itself only travels as an
//! event, with its expiry, and each stream turns a lapsed signal into "stopped typing".

use codingagent_kernel::redis::RedisClient;
use codingagent_proto::codingagent::chat::v1 as pb;
use codingagent_proto::codingagent::common::v1::Actor;
use fred::interfaces::{KeysInterface, SortedSetsInterface};
use fred::types::{Expiration, SetOptions};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// How long a participant who left is listed as AWAY.
const AWAY_FOR: Duration = Duration::from_secs(300);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

fn presence_key(conversation: Uuid) -> String {
    format!("chat:presence:{conversation}")
}

fn seen_key(conversation: Uuid) -> String {
    format!("chat:seen:{conversation}")
}

fn participant(actor: &Actor) -> String {
    format!("{}|{}", actor.kind, actor.id)
}

/// The actor of a `chat:seen` member (`kind|id`; the id may itself contain `|`).
fn parse_participant(member: &str) -> Option<Actor> {
    let (kind, id) = member.split_once('|')?;
    Some(Actor { kind: kind.parse().ok()?, id: id.to_owned(), via: String::new() })
}

fn timestamp_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1_000), nanos: (ms.rem_euclid(1_000) * 1_000_000) as i32 }
}

#[derive(Debug, Clone)]
pub(crate) struct Presence {
    redis: RedisClient,
    ttl: Duration,
}

impl Presence {
    pub(crate) fn new(redis: RedisClient, ttl: Duration) -> Self {
        Self { redis, ttl }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Registers (or renews) one open stream; returns the participant's connection count, and
    /// whether the stream was absent (new, or swept as lapsed because a renewal came late).
    pub(crate) async fn join(
        &self,
        conversation: Uuid,
        actor: &Actor,
        connection: Uuid,
    ) -> Result<(i32, bool), fred::error::Error> {
        let now = now_ms();
        let member = format!("{}|{connection}", participant(actor));
        let lapses = (now + self.ttl.as_millis() as i64) as f64;
        let added: i64 =
            self.redis.zadd(presence_key(conversation), None, None, false, false, (lapses, member)).await?;
        self.seen(conversation, actor, now).await?;
        Ok((self.connections(conversation, actor).await?, added == 1))
    }

    /// Removes one stream; returns how many the participant still has open.
    pub(crate) async fn leave(
        &self,
        conversation: Uuid,
        actor: &Actor,
        connection: Uuid,
    ) -> Result<i32, fred::error::Error> {
        let member = format!("{}|{connection}", participant(actor));
        let _: i64 = self.redis.zrem(presence_key(conversation), member).await?;
        self.seen(conversation, actor, now_ms()).await?;
        self.connections(conversation, actor).await
    }

    async fn seen(&self, conversation: Uuid, actor: &Actor, now: i64) -> Result<(), fred::error::Error> {
        let _: i64 = self
            .redis
            .zadd(seen_key(conversation), None, None, false, false, (now as f64, participant(actor)))
            .await?;
        let away_ms = AWAY_FOR.as_millis() as i64;
        let _: i64 = self.redis.expire(seen_key(conversation), away_ms / 1_000 * 2, None).await?;
        let _: i64 =
            self.redis.expire(presence_key(conversation), self.ttl.as_secs() as i64 * 2, None).await?;
        Ok(())
    }

    /// Removes the streams that lapsed (their replica died without closing them) and returns,
    /// as OFFLINE, the participants left without an open stream. Each removal is answered to
    /// one caller only, so streams sweeping at once do not repeat each other's reports (two
    /// lapsed streams of one participant, swept by two callers, may each report them).
    pub(crate) async fn sweep(&self, conversation: Uuid) -> Result<Vec<pb::Presence>, fred::error::Error> {
        let lapsed: Vec<(String, f64)> = self
            .redis
            .zrangebyscore(presence_key(conversation), f64::NEG_INFINITY, now_ms() as f64, true, None)
            .await?;
        let mut gone: BTreeMap<String, i64> = BTreeMap::new();
        for (member, lapsed_at) in lapsed {
            let removed: i64 = self.redis.zrem(presence_key(conversation), member.clone()).await?;
            if let (1, Some((who, _connection))) = (removed, member.rsplit_once('|')) {
                // Last renewed one TTL before it lapsed.
                let seen = lapsed_at as i64 - self.ttl.as_millis() as i64;
                let latest = gone.entry(who.to_owned()).or_insert(seen);
                *latest = (*latest).max(seen);
            }
        }
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let live = self.live(conversation).await?;
        Ok(gone
            .into_iter()
            .filter(|(who, _)| !live.contains_key(who))
            .filter_map(|(who, seen)| {
                Some(pb::Presence {
                    actor: Some(parse_participant(&who)?),
                    state: pb::PresenceState::Offline as i32,
                    last_seen_time: Some(timestamp_ms(seen)),
                    connection_count: 0,
                })
            })
            .collect())
    }

    /// Live connections per participant. Lapsed members are left for `sweep`, which reports
    /// them; removing them here would lose that report.
    async fn live(&self, conversation: Uuid) -> Result<BTreeMap<String, i32>, fred::error::Error> {
        let now = now_ms();
        let members: Vec<String> = self
            .redis
            .zrangebyscore(presence_key(conversation), now as f64, f64::INFINITY, false, None)
            .await?;
        let mut counts = BTreeMap::new();
        for member in members {
            if let Some((who, _connection)) = member.rsplit_once('|') {
                *counts.entry(who.to_owned()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    async fn connections(&self, conversation: Uuid, actor: &Actor) -> Result<i32, fred::error::Error> {
        Ok(self.live(conversation).await?.get(&participant(actor)).copied().unwrap_or(0))
    }

    /// Everyone ONLINE (an open stream) or AWAY (left within five minutes): online first,
    /// then by when they were last seen, newest first.
    pub(crate) async fn list(&self, conversation: Uuid) -> Result<Vec<pb::Presence>, fred::error::Error> {
        let live = self.live(conversation).await?;
        let since = now_ms() - AWAY_FOR.as_millis() as i64;
        let _: i64 =
            self.redis.zremrangebyscore(seen_key(conversation), f64::NEG_INFINITY, since as f64).await?;
        let seen: Vec<(String, f64)> =
            self.redis.zrangebyscore(seen_key(conversation), since as f64, f64::INFINITY, true, None).await?;
        let mut list: Vec<pb::Presence> = seen
            .into_iter()
            .filter_map(|(who, at)| {
                let connection_count = live.get(&who).copied().unwrap_or(0);
                let state =
                    if connection_count > 0 { pb::PresenceState::Online } else { pb::PresenceState::Away };
                Some(pb::Presence {
                    actor: Some(parse_participant(&who)?),
                    state: state as i32,
                    last_seen_time: Some(timestamp_ms(at as i64)),
                    connection_count,
                })
            })
            .collect();
        list.sort_by(|a, b| {
            (a.state, std::cmp::Reverse(a.last_seen_time.map(|t| (t.seconds, t.nanos))))
                .cmp(&(b.state, std::cmp::Reverse(b.last_seen_time.map(|t| (t.seconds, t.nanos)))))
        });
        Ok(list)
    }

    /// Admits one SetTyping per caller and conversation per second; `Err` when limited.
    /// Without Redis the limit is not enforced.
    pub(crate) async fn admit_typing(&self, conversation: Uuid, actor: &Actor) -> Result<(), ()> {
        let key = format!("chat:typing-limit:{conversation}:{}", participant(actor));
        let set: Result<Option<String>, _> =
            self.redis.set(key, 1, Some(Expiration::PX(1_000)), Some(SetOptions::NX), false).await;
        match set {
            Ok(None) => Err(()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_round_trip_even_with_separators_in_ids() {
        let actor = Actor { kind: 1, id: "alice|admin".into(), via: String::new() };
        assert_eq!(parse_participant(&participant(&actor)), Some(actor));
        assert_eq!(parse_participant("no separator"), None);
        assert_eq!(timestamp_ms(1_500).seconds, 1);
        assert_eq!(timestamp_ms(1_500).nanos, 500_000_000);
    }
}
