//! Conversation RPCs: create, get, list, update (title, members) and soft delete.

use crate::access::{find, require_owner};
use crate::convert::{now, timestamp};
use crate::engine::Engine;
use crate::error::Result;
use crate::store::{self, Change};
use crate::validate::ChatChecks;
use codingagent_kernel::idempotency::Key;
use codingagent_kernel::identity::Caller;
use codingagent_kernel::kafka::{enqueue, topics};
use codingagent_kernel::pagination;
use codingagent_kernel::validate::Violations;
use codingagent_proto::codingagent::chat::v1 as pb;
use codingagent_proto::codingagent::events::v1 as events;
use uuid::Uuid;

const DEFAULT_TITLE: &str = "New conversation";

pub(crate) async fn create(
    engine: &Engine,
    caller: &Caller,
    request: pb::CreateConversationRequest,
) -> Result<pb::CreateConversationResponse> {
    let owner = caller.require_user()?.to_owned();
    let mut v = Violations::default();
    v.title("title", &request.title, true);
    v.members("member_ids", &request.member_ids, &owner);
    v.request_id(&request.request_id);
    v.finish()?;
    let key = Key::new(caller, "CreateConversation", &request.request_id, &request);
    engine
        .mutate(key, async |tx| {
            let title = if request.title.is_empty() { DEFAULT_TITLE } else { request.title.trim() };
            let created =
                store::insert_conversation(&mut *tx, Uuid::now_v7(), &owner, title, &request.member_ids)
                    .await?;
            let event = events::ConversationCreated {
                conversation_id: created.proto.id.clone(),
                actor: Some(caller.actor()),
                occur_time: created.proto.create_time,
                conversation: Some(created.proto.clone()),
            };
            enqueue(&mut *tx, topics::CHAT, &created.proto.id, &event).await?;
            let response = pb::CreateConversationResponse { conversation: Some(created.proto) };
            Ok((response, None))
        })
        .await
}

/// The conversation with `id` if the caller may see it; NOT_FOUND otherwise.
pub(crate) async fn visible(engine: &Engine, caller: &Caller, id: Uuid) -> Result<store::Conversation> {
    let mut conn = engine.pool.acquire().await?;
    Ok(find(&mut conn, id, caller, false).await?.0)
}

pub(crate) async fn get(
    engine: &Engine,
    caller: &Caller,
    request: pb::GetConversationRequest,
) -> Result<pb::GetConversationResponse> {
    let mut v = Violations::default();
    let id = v.id("conversation_id", &request.conversation_id);
    v.finish()?;
    let conversation = visible(engine, caller, id.unwrap_or_default()).await?;
    Ok(pb::GetConversationResponse { conversation: Some(conversation.proto) })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ListCursor {
    activity: chrono::DateTime<chrono::Utc>,
    id: Uuid,
}

pub(crate) async fn list(
    engine: &Engine,
    caller: &Caller,
    request: pb::ListConversationsRequest,
) -> Result<pb::ListConversationsResponse> {
    let user = caller.require_user()?;
    let limit = pagination::page_size(request.page_size, 20, 100)?;
    let cursor: Option<ListCursor> = pagination::decode(&request.page_token)?;
    let rows =
        store::list_conversations(&engine.pool, user, cursor.map(|c| (c.activity, c.id)), limit + 1).await?;
    let (rows, next_page_token) = pagination::page(rows, limit, |c| ListCursor {
        activity: c.proto.last_activity_time.as_ref().and_then(crate::convert::to_chrono).unwrap_or_default(),
        id: c.id,
    });
    Ok(pb::ListConversationsResponse {
        conversations: rows.into_iter().map(|c| c.proto).collect(),
        next_page_token,
    })
}

pub(crate) async fn update(
    engine: &Engine,
    caller: &Caller,
    request: pb::UpdateConversationRequest,
) -> Result<pb::UpdateConversationResponse> {
    let mut v = Violations::default();
    // Borrowed, not moved: the idempotency key fingerprints the whole request below.
    let changes = request.conversation.clone().unwrap_or_default();
    let id = v.id("conversation.id", &changes.id);
    let paths = request.update_mask.as_ref().map(|m| m.paths.clone()).unwrap_or_default();
    if paths.is_empty() {
        v.add("update_mask", "name the fields to change: title, member_ids");
    }
    for path in &paths {
        match path.as_str() {
            "title" => v.title("conversation.title", &changes.title, false),
            "member_ids" => v.members(
                "conversation.member_ids",
                &changes.member_ids,
                caller.user_id().unwrap_or(&caller.subject),
            ),
            other => v.add("update_mask", format!("`{other}` cannot be changed; only title and member_ids")),
        }
    }
    v.request_id(&request.request_id);
    v.finish()?;
    let id = id.unwrap_or_default();
    let key = Key::new(caller, "UpdateConversation", &request.request_id, &request);
    engine
        .mutate(key, async |tx| {
            let (current, _) = find(&mut *tx, id, caller, true).await?;
            require_owner(&current, caller)?;
            let title = paths.iter().any(|p| p == "title").then(|| changes.title.trim());
            let members = paths.iter().any(|p| p == "member_ids").then_some(changes.member_ids.as_slice());
            let seq = store::next_seq(&mut *tx, id, Change::Conversation).await?;
            // The event carries the conversation after the change, its new seq included.
            let updated = store::update_conversation(&mut *tx, id, title, members).await?;
            let recorded = engine
                .record(
                    &mut *tx,
                    id,
                    seq,
                    pb::conversation_event::Event::ConversationUpdated(updated.proto.clone()),
                )
                .await?;
            let response = pb::UpdateConversationResponse { conversation: Some(updated.proto) };
            Ok((response, Some(recorded)))
        })
        .await
}

pub(crate) async fn delete(
    engine: &Engine,
    caller: &Caller,
    request: pb::DeleteConversationRequest,
) -> Result<pb::DeleteConversationResponse> {
    let mut v = Violations::default();
    let id = v.id("conversation_id", &request.conversation_id);
    v.request_id(&request.request_id);
    v.finish()?;
    let id = id.unwrap_or_default();
    let key = Key::new(caller, "DeleteConversation", &request.request_id, &request);
    engine
        .mutate(key, async |tx| {
            let (current, _) = find(&mut *tx, id, caller, true).await?;
            require_owner(&current, caller)?;
            let by = caller.actor();
            let seq = store::next_seq(&mut *tx, id, Change::Conversation).await?;
            let deleted = pb::ConversationDeletedEvent { actor: Some(by.clone()) };
            let recorded = engine
                .record(&mut *tx, id, seq, pb::conversation_event::Event::ConversationDeleted(deleted))
                .await?;
            let purge_at = store::soft_delete(&mut *tx, id, engine.config.retention_days).await?;
            let event = events::ConversationDeleted {
                conversation_id: id.to_string(),
                actor: Some(by),
                occur_time: Some(now()),
                purge_time: Some(timestamp(purge_at)),
            };
            enqueue(&mut *tx, topics::CHAT, &id.to_string(), &event).await?;
            let response = pb::DeleteConversationResponse { purge_time: Some(timestamp(purge_at)) };
            Ok((response, Some(recorded)))
        })
        .await
}
