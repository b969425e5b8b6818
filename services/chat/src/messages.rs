//! Message RPCs: post, list (both directions, latest page cached), edit and delete.

use crate::access::{Role, is_author, role};
use crate::attachments;
use crate::cache::Source;
use crate::conversations::visible;
use crate::convert::{now, participant};
use crate::engine::Engine;
use crate::error::{ChatError, Result};
use crate::store::{self, Change};
use crate::validate::{ChatChecks, MAX_TASK_ID};
use codingagent_kernel::error::FieldViolation;
use codingagent_kernel::idempotency::Key;
use codingagent_kernel::identity::Caller;
use codingagent_kernel::kafka::{enqueue, topics};
use codingagent_kernel::pagination;
use codingagent_kernel::validate::Violations;
use codingagent_proto::codingagent::chat::v1 as pb;
use codingagent_proto::codingagent::events::v1 as events;
use pb::conversation_event::Event;
use uuid::Uuid;

const MAX_ATTACHMENTS: usize = 10;

pub(crate) async fn post(
    engine: &Engine,
    caller: &Caller,
    request: pb::PostMessageRequest,
) -> Result<pb::PostMessageResponse> {
    let mut v = Violations::default();
    let conversation_id = v.id("conversation_id", &request.conversation_id);
    v.message_text("text", &request.text, !request.attachment_ids.is_empty());
    if request.attachment_ids.len() > MAX_ATTACHMENTS {
        v.add("attachment_ids", format!("at most {MAX_ATTACHMENTS} attachments"));
    }
    let uploads: Vec<Uuid> = request
        .attachment_ids
        .iter()
        .enumerate()
        .filter_map(|(index, raw)| v.id(&format!("attachment_ids[{index}]"), raw))
        .collect();
    let reply_to = v.optional_id("reply_to_message_id", &request.reply_to_message_id);
    v.text("task_id", &request.task_id, MAX_TASK_ID);
    v.request_id(&request.request_id);
    v.finish()?;
    let id = conversation_id.unwrap_or_default();
    let author = participant(caller);
    let key = Key::new(caller, "PostMessage", &request.request_id, &request);
    engine
        .mutate(key, async |tx| {
            let (conversation, _) = crate::access::find(&mut *tx, id, caller, true).await?;
            if let Some(reply_to) = reply_to
                && !store::message_in(&mut *tx, id, reply_to).await?
            {
                return Err(ChatError::invalid(
                    "reply_to_message_id",
                    "is not a message of this conversation",
                ));
            }
            let seq = store::next_seq(&mut *tx, id, Change::Messages(1)).await?;
            let new = store::NewMessage {
                id: Uuid::now_v7(),
                conversation_id: id,
                seq,
                author: &author,
                text: &request.text,
                reply_to,
                task_id: &request.task_id,
            };
            let mut message = store::insert_message(&mut *tx, &new).await?;
            let uploader = caller.user_id().unwrap_or(&caller.subject);
            match attachments::attach(&mut *tx, id, uploader, &uploads, new.id).await? {
                Ok(attached) => message.attachments = attached,
                Err(bad) => {
                    let violations = bad.into_iter().map(|index| {
                        FieldViolation::new(
                            format!("attachment_ids[{index}]"),
                            "is not a pending upload of yours in this conversation",
                        )
                    });
                    return Err(ChatError::Invalid(violations.collect()));
                }
            }
            let recorded = engine.record(&mut *tx, id, seq, Event::MessagePosted(message.clone())).await?;
            let event = events::MessagePosted {
                conversation_id: id.to_string(),
                actor: Some(caller.actor()),
                occur_time: message.create_time,
                message: Some(message.clone()),
                conversation_owner: conversation.owner,
            };
            enqueue(&mut *tx, topics::CHAT, &id.to_string(), &event).await?;
            let response = pb::PostMessageResponse { message: Some(message) };
            Ok((response, Some(recorded)))
        })
        .await
}

#[derive(serde::Serialize, serde::Deserialize)]
struct MessageCursor {
    forward: bool,
    seq: i64,
    conversation: Uuid,
}

pub(crate) async fn list(
    engine: &Engine,
    caller: &Caller,
    request: pb::ListMessagesRequest,
) -> Result<pb::ListMessagesResponse> {
    let mut v = Violations::default();
    let id = v.id("conversation_id", &request.conversation_id);
    if request.anchor_seq < 0 {
        v.add("anchor_seq", "must not be negative");
    }
    if request.page_size < 0 {
        v.add("page_size", "must not be negative");
    }
    let direction = pb::ListMessagesDirection::try_from(request.direction);
    if direction.is_err() {
        v.add("direction", "unknown direction");
    }
    v.finish()?;
    let id = id.unwrap_or_default();
    let limit = pagination::page_size(request.page_size, 50, 200)?;
    let forward = direction == Ok(pb::ListMessagesDirection::Forward);
    let cursor: Option<MessageCursor> = pagination::decode(&request.page_token)?;
    if cursor.as_ref().is_some_and(|c| c.forward != forward || c.conversation != id) {
        return Err(ChatError::invalid("page_token", "was issued for another conversation or direction"));
    }
    let anchor = cursor.map_or(request.anchor_seq, |c| c.seq);
    let latest_page = !forward && anchor == 0 && limit as usize <= engine.cache.size;
    let started = std::time::Instant::now();
    let mut rows = if latest_page {
        let (rows, source) = latest(engine, caller, id).await?;
        engine.cache.observe(source, started.elapsed());
        rows
    } else {
        visible(engine, caller, id).await?;
        let mut rows = store::list_messages(&engine.pool, id, forward, anchor, limit + 1).await?;
        attachments::fill(&engine.pool, &mut rows).await?;
        rows
    };
    if latest_page {
        // The cache holds `cache.size` (+1) messages; keep one more than the page to know
        // whether older ones exist.
        let start = rows.len().saturating_sub(limit as usize + 1);
        rows.drain(..start);
    }
    let more = rows.len() as i64 > limit;
    if more {
        // Keep the `limit` messages nearest the anchor.
        if forward { rows.truncate(limit as usize) } else { rows.drain(..1).for_each(drop) }
    }
    let next_page_token = match (more, forward) {
        (true, true) => {
            rows.last().map(|m| pagination::encode(&MessageCursor { forward, seq: m.seq, conversation: id }))
        }
        (true, false) => {
            rows.first().map(|m| pagination::encode(&MessageCursor { forward, seq: m.seq, conversation: id }))
        }
        (false, _) => None,
    }
    .unwrap_or_default();
    Ok(pb::ListMessagesResponse { messages: rows, next_page_token })
}

/// The newest messages, from the cache when it is current. A cache entry carries the
/// conversation's owner and members, which the generation invalidates like the messages, so
/// a hit needs no database round trip even for the access check.
async fn latest(engine: &Engine, caller: &Caller, id: Uuid) -> Result<(Vec<pb::Message>, Source)> {
    let stamp = match engine.cache.get(id).await {
        Ok((conversation, messages)) => {
            role(&store::Conversation::from_proto(id, conversation), caller)?;
            return Ok((messages, Source::Cache));
        }
        Err(stamp) => stamp,
    };
    let conversation = visible(engine, caller, id).await?;
    // One more than the cache keeps, so a full cached page still knows older messages exist.
    let mut rows = store::list_messages(&engine.pool, id, false, 0, engine.cache.size as i64 + 1).await?;
    attachments::fill(&engine.pool, &mut rows).await?;
    if let Some(stamp) = stamp {
        engine.cache.put(id, stamp, &conversation.proto, &rows).await;
    }
    Ok((rows, Source::Database))
}

/// The message with `id` in a conversation the caller can see, and the caller's role there.
async fn target(
    caller: &Caller,
    tx: &mut sqlx::PgConnection,
    id: Uuid,
) -> Result<(pb::Message, store::Conversation, Role)> {
    let mut message =
        store::message_by_id(tx, id).await?.ok_or_else(|| ChatError::not_found("message", id.to_string()))?;
    attachments::fill(&mut *tx, std::slice::from_mut(&mut message)).await?;
    let conversation_id = Uuid::parse_str(&message.conversation_id).unwrap_or_default();
    // Lock the conversation: edits and deletes take seqs like posts do.
    let conversation = store::conversation_by_id(tx, conversation_id, true)
        .await?
        .ok_or_else(|| ChatError::not_found("message", id.to_string()))?;
    let role = role(&conversation, caller).map_err(|_| ChatError::not_found("message", id.to_string()))?;
    Ok((message, conversation, role))
}

pub(crate) async fn edit(
    engine: &Engine,
    caller: &Caller,
    request: pb::EditMessageRequest,
) -> Result<pb::EditMessageResponse> {
    let mut v = Violations::default();
    let id = v.id("message_id", &request.message_id);
    v.message_text("text", &request.text, false);
    v.request_id(&request.request_id);
    v.finish()?;
    let id = id.unwrap_or_default();
    let key = Key::new(caller, "EditMessage", &request.request_id, &request);
    engine
        .mutate(key, async |tx| {
            let (message, conversation, _) = target(caller, &mut *tx, id).await?;
            let by = caller.actor();
            if !is_author(message.author.as_ref(), &by) {
                return Err(ChatError::Denied(
                    "AUTHOR_REQUIRED",
                    "only a message's author may edit it".into(),
                ));
            }
            if message.delete_time.is_some() {
                return Err(ChatError::FailedPrecondition(
                    "MESSAGE_DELETED",
                    "a deleted message cannot be edited".into(),
                ));
            }
            let seq = store::next_seq(&mut *tx, conversation.id, Change::Messages(0)).await?;
            let mut edited = store::edit_message(&mut *tx, id, &request.text).await?;
            edited.attachments = message.attachments.clone();
            let recorded =
                engine.record(&mut *tx, conversation.id, seq, Event::MessageEdited(edited.clone())).await?;
            let event = events::MessageEdited {
                conversation_id: conversation.proto.id.clone(),
                actor: Some(by),
                occur_time: edited.edit_time,
                message: Some(edited.clone()),
                previous_text: message.text,
            };
            enqueue(&mut *tx, topics::CHAT, &conversation.proto.id, &event).await?;
            let response = pb::EditMessageResponse { message: Some(edited) };
            Ok((response, Some(recorded)))
        })
        .await
}

pub(crate) async fn delete(
    engine: &Engine,
    caller: &Caller,
    request: pb::DeleteMessageRequest,
) -> Result<pb::DeleteMessageResponse> {
    let mut v = Violations::default();
    let id = v.id("message_id", &request.message_id);
    v.request_id(&request.request_id);
    v.finish()?;
    let id = id.unwrap_or_default();
    let key = Key::new(caller, "DeleteMessage", &request.request_id, &request);
    let mut orphaned = Vec::new();
    let response = engine
        .mutate(key, async |tx| {
            let (message, conversation, role) = target(caller, &mut *tx, id).await?;
            let by = caller.actor();
            if !(is_author(message.author.as_ref(), &by) || role == Role::Owner) {
                return Err(ChatError::Denied(
                    "AUTHOR_OR_OWNER_REQUIRED",
                    "only the author or the conversation's owner may delete a message".into(),
                ));
            }
            if message.delete_time.is_some() {
                // Deleting again changes nothing and says so by returning the same tombstone.
                return Ok((pb::DeleteMessageResponse { message: Some(message) }, None));
            }
            let seq = store::next_seq(&mut *tx, conversation.id, Change::Messages(-1)).await?;
            let tombstone = store::tombstone(&mut *tx, id).await?;
            orphaned = attachments::detach_all(&mut *tx, id).await?;
            let recorded = engine
                .record(&mut *tx, conversation.id, seq, Event::MessageDeleted(tombstone.clone()))
                .await?;
            let event = events::MessageDeleted {
                conversation_id: conversation.proto.id.clone(),
                actor: Some(by),
                occur_time: Some(now()),
                message_id: tombstone.id.clone(),
                message_seq: tombstone.seq,
            };
            enqueue(&mut *tx, topics::CHAT, &conversation.proto.id, &event).await?;
            let response = pb::DeleteMessageResponse { message: Some(tombstone) };
            Ok((response, Some(recorded)))
        })
        .await?;
    // A tombstone keeps no attachments; their bytes go once the deletion committed.
    engine.attachments.delete_objects(&orphaned).await;
    Ok(response)
}
