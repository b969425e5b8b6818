//! StreamConversation: replay the durable events after `after_seq` from PostgreSQL, then
//! follow the live fan-out, never skipping or repeating a durable event. The subscription
//! starts before the replay, so nothing published meanwhile is lost; live durable events at
//! or below the last delivered seq are dropped, and one above it by more than one means
//! pub/sub lost something, which is then read from PostgreSQL. A heartbeat on idle streams
//! also reads anything newer, which covers a lost *last* event and Redis being down.
//! Messages read back from the log are shown as they are now (see [`as_they_are_now`]).
//! While the stream is open its caller is present in the conversation.

use crate::access::role;
use crate::convert::{now, participant};
use crate::engine::Engine;
use crate::error::{ChatError, Result};
use crate::store;
use codingagent_kernel::identity::Caller;
use codingagent_kernel::validate::Violations;
use codingagent_proto::codingagent::chat::v1 as pb;
use codingagent_proto::codingagent::common::v1::Actor;
use futures::Stream;
use pb::conversation_event::Event;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;
use uuid::Uuid;

/// Durable events read from the database per query.
const BATCH: i64 = 500;

pub(crate) type EventStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<pb::StreamConversationResponse, Status>> + Send>>;

fn durable(event: &pb::ConversationEvent) -> bool {
    !matches!(event.event, Some(Event::Typing(_) | Event::Presence(_) | Event::Heartbeat(_)) | None)
}

fn ends(event: &pb::ConversationEvent) -> bool {
    matches!(event.event, Some(Event::ConversationDeleted(_)))
}

fn item(event: pb::ConversationEvent) -> pb::StreamConversationResponse {
    pb::StreamConversationResponse { event: Some(event) }
}

/// Validates, authorizes and opens the stream.
pub(crate) async fn open(
    engine: Arc<Engine>,
    caller: &Caller,
    request: pb::StreamConversationRequest,
) -> Result<EventStream> {
    let mut v = Violations::default();
    let id = v.id("conversation_id", &request.conversation_id);
    if request.after_seq < 0 {
        v.add("after_seq", "must not be negative");
    }
    v.finish()?;
    let id = id.unwrap_or_default();
    let conversation = crate::conversations::visible(&engine, caller, id).await?;
    if request.after_seq > conversation.proto.last_seq {
        return Err(ChatError::OutOfRange(format!(
            "after_seq {} is beyond the conversation's last seq {}",
            request.after_seq, conversation.proto.last_seq
        )));
    }
    Ok(Box::pin(follow(engine, id, caller.clone(), request.after_seq)))
}

/// Marks the caller present for as long as the stream lives, and absent when it is dropped
/// (the client went away or the stream ended).
struct PresenceGuard {
    engine: Arc<Engine>,
    conversation: Uuid,
    actor: Actor,
    connection: Uuid,
}

/// Tells the conversation that `actor` now has `count` open streams there.
async fn announce_presence(engine: &Engine, conversation: Uuid, actor: &Actor, count: i32) {
    let state = if count > 0 { pb::PresenceState::Online } else { pb::PresenceState::Offline };
    let presence = pb::Presence {
        actor: Some(actor.clone()),
        state: state as i32,
        last_seen_time: Some(now()),
        connection_count: count,
    };
    announce(engine, conversation, presence).await;
}

async fn announce(engine: &Engine, conversation: Uuid, presence: pb::Presence) {
    let seq = last_seq(engine, conversation).await;
    engine
        .announce_ephemeral(
            conversation,
            seq,
            Event::Presence(pb::PresenceEvent { presence: Some(presence) }),
        )
        .await;
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let (engine, conversation, actor, connection) =
            (self.engine.clone(), self.conversation, self.actor.clone(), self.connection);
        tokio::spawn(async move {
            if let Ok(count) = engine.presence.leave(conversation, &actor, connection).await {
                announce_presence(&engine, conversation, &actor, count).await;
            }
        });
    }
}

async fn last_seq(engine: &Engine, conversation: Uuid) -> i64 {
    let mut conn = match engine.pool.acquire().await {
        Ok(conn) => conn,
        Err(_) => return 0,
    };
    store::conversation_by_id(&mut conn, conversation, false)
        .await
        .ok()
        .flatten()
        .map_or(0, |c| c.proto.last_seq)
}

fn follow(
    engine: Arc<Engine>,
    conversation: Uuid,
    caller: Caller,
    after_seq: i64,
) -> impl Stream<Item = Result<pb::StreamConversationResponse, Status>> {
    async_stream::try_stream! {
        let mut live = engine.fanout.subscribe(conversation);
        let guard = PresenceGuard { engine: engine.clone(), conversation, actor: participant(&caller), connection: Uuid::new_v4() };
        match engine.presence.join(conversation, &guard.actor, guard.connection).await {
            Ok((count, _)) => announce_presence(&engine, conversation, &guard.actor, count).await,
            Err(error) => tracing::warn!(%error, "presence unavailable; the stream goes on without it"),
        }
        let mut last = after_seq;
        let mut typing: HashMap<(i32, String), (Actor, Instant)> = HashMap::new();
        let heartbeat_every = Duration::from_secs(engine.config.heartbeat_secs);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat_every, heartbeat_every);
        let renew_every = engine.presence.ttl() / 3;
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        let mut typing_check = tokio::time::interval(Duration::from_millis(500));
        // Everything missed so far, from the database.
        let mut backlog = catch_up(&engine, conversation, last).await?;
        loop {
            let full = backlog.len() as i64 == BATCH;
            for event in backlog.drain(..) {
                if event.seq <= last {
                    continue;
                }
                last = event.seq;
                let end = ends(&event);
                yield item(event);
                if end {
                    return;
                }
            }
            if full {
                // A long replay: keep reading before waiting for anything live.
                backlog = catch_up(&engine, conversation, last).await?;
                continue;
            }
            let wake = tokio::select! {
                received = live.recv() => Wake::Live(received),
                _ = heartbeat.tick() => Wake::Heartbeat,
                _ = renew.tick() => Wake::Renew,
                _ = typing_check.tick() => Wake::TypingCheck,
            };
            match wake {
                Wake::Live(Ok(event)) if durable(&event) => {
                    if event.seq == last + 1 {
                        backlog.push((*event).clone());
                    } else if event.seq > last + 1 {
                        // Pub/sub lost something in between: the database has it all.
                        backlog = catch_up(&engine, conversation, last).await?;
                    }
                }
                Wake::Live(Ok(event)) => {
                    if let Some(Event::Typing(signal)) = &event.event
                        && let Some(who) = &signal.actor
                    {
                        let key = (who.kind, who.id.clone());
                        if signal.typing {
                            let lasts = Duration::from_secs(engine.config.typing_ttl_secs);
                            typing.insert(key, (who.clone(), Instant::now() + lasts));
                        } else {
                            typing.remove(&key);
                        }
                    }
                    let mut event = (*event).clone();
                    event.seq = last;
                    yield item(event);
                }
                Wake::Live(Err(RecvError::Lagged(_))) => backlog = catch_up(&engine, conversation, last).await?,
                Wake::Live(Err(RecvError::Closed)) => live = engine.fanout.subscribe(conversation),
                Wake::Heartbeat => {
                    // A member removed since the stream opened stops receiving at once.
                    still_visible(&engine, conversation, &caller).await?;
                    backlog = catch_up(&engine, conversation, last).await?;
                    if backlog.is_empty() {
                        let beat = pb::Heartbeat { server_time: Some(now()) };
                        yield item(pb::ConversationEvent { seq: last, time: Some(now()), event: Some(Event::Heartbeat(beat)) });
                    }
                }
                Wake::Renew => {
                    let renewed = engine.presence.join(conversation, &guard.actor, guard.connection).await;
                    if let Ok((count, true)) = renewed {
                        // Swept as lapsed while this stream was late to renew: online again.
                        announce_presence(&engine, conversation, &guard.actor, count).await;
                    }
                    // Those whose replica died are noticed here, by whoever is still streaming.
                    for presence in engine.presence.sweep(conversation).await.unwrap_or_default() {
                        announce(&engine, conversation, presence).await;
                    }
                }
                Wake::TypingCheck => {
                    let lapsed: Vec<(i32, String)> =
                        typing.iter().filter(|(_, (_, until))| *until <= Instant::now()).map(|(k, _)| k.clone()).collect();
                    for key in lapsed {
                        if let Some((who, _)) = typing.remove(&key) {
                            let stopped = pb::TypingEvent { actor: Some(who), typing: false, expire_time: None };
                            yield item(pb::ConversationEvent { seq: last, time: Some(now()), event: Some(Event::Typing(stopped)) });
                        }
                    }
                }
            }
        }
    }
}

/// What woke a stream up.
enum Wake {
    Live(Result<crate::fanout::Event, RecvError>),
    Heartbeat,
    Renew,
    TypingCheck,
}

/// NOT_FOUND once the caller may no longer see the conversation.
async fn still_visible(engine: &Engine, conversation: Uuid, caller: &Caller) -> Result<(), Status> {
    let mut conn = engine.pool.acquire().await.map_err(|e| Status::from(ChatError::from(e)))?;
    let found = store::conversation_by_id(&mut conn, conversation, false)
        .await
        .map_err(|e| Status::from(ChatError::from(e)))?;
    match found {
        Some(found) => role(&found, caller).map(drop).map_err(Status::from),
        // Deleted: the stream ends with the deletion event it has already delivered.
        None => Ok(()),
    }
}

/// Durable events after `after` from the database (up to one batch; a longer gap is read
/// in further batches as the stream drains them), each message as it is now.
async fn catch_up(
    engine: &Engine,
    conversation: Uuid,
    after: i64,
) -> Result<Vec<pb::ConversationEvent>, Status> {
    let read = async {
        let mut events = store::events_after(&engine.pool, conversation, after, BATCH).await?;
        as_they_are_now(&engine.pool, conversation, &mut events).await?;
        Ok::<_, sqlx::Error>(events)
    };
    read.await.map_err(|e| ChatError::from(e).into())
}

/// The message a durable event carries, if any.
fn carried(event: &mut pb::ConversationEvent) -> Option<&mut pb::Message> {
    match event.event.as_mut()? {
        Event::MessagePosted(m) | Event::MessageEdited(m) | Event::MessageDeleted(m) => Some(m),
        _ => None,
    }
}

/// The log keeps each message as it was when its event happened. A replay must not serve
/// again what was since deleted or replaced (ListMessages does not), so every message it
/// carries is swapped for the stored one: a tombstone for a deleted message, the current
/// text and attachments for an edited one. Seqs and event kinds stay, and since events carry
/// the whole message, a client applying them in order ends where ListMessages is.
async fn as_they_are_now(
    pool: &sqlx::PgPool,
    conversation: Uuid,
    events: &mut [pb::ConversationEvent],
) -> Result<(), sqlx::Error> {
    let mut ids: Vec<Uuid> =
        events.iter_mut().filter_map(carried).filter_map(|m| Uuid::parse_str(&m.id).ok()).collect();
    if ids.is_empty() {
        return Ok(());
    }
    ids.sort_unstable();
    ids.dedup();
    let mut now = store::messages_by_ids(pool, conversation, &ids).await?;
    crate::attachments::fill(pool, &mut now).await?;
    let now: HashMap<String, pb::Message> = now.into_iter().map(|m| (m.id.clone(), m)).collect();
    for message in events.iter_mut().filter_map(carried) {
        // A message lives as long as its conversation and its log, so it is always found.
        if let Some(current) = now.get(&message.id) {
            *message = current.clone();
        }
    }
    Ok(())
}
