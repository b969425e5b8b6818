//! PostgreSQL access: conversations, their durable event log, and messages.

use crate::convert::timestamp;
use codingagent_proto::codingagent::chat::v1 as pb;
use codingagent_proto::codingagent::common::v1::Actor;
use prost::Message as _;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

const CONVERSATION_COLUMNS: &str =
    "id, owner, title, member_ids, created_at, updated_at, last_activity_at, message_count, last_seq";
const MESSAGE_COLUMNS: &str = "id, conversation_id, seq, author_kind, author_id, text, created_at, updated_at, \
     edited_at, deleted_at, reply_to, task_id";

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Conversation {
    pub id: Uuid,
    pub owner: String,
    pub member_ids: Vec<String>,
    pub proto: pb::Conversation,
}

impl Conversation {
    /// A conversation as a cache entry carried it.
    pub(crate) fn from_proto(id: Uuid, proto: pb::Conversation) -> Self {
        Self { id, owner: proto.owner.clone(), member_ids: proto.member_ids.clone(), proto }
    }
}

fn conversation(row: &PgRow) -> Conversation {
    let time = |column: &str| Some(timestamp(row.get(column)));
    let id: Uuid = row.get("id");
    let member_ids: Vec<String> = row.get("member_ids");
    let owner: String = row.get("owner");
    Conversation {
        id,
        owner: owner.clone(),
        member_ids: member_ids.clone(),
        proto: pb::Conversation {
            id: id.to_string(),
            owner,
            create_time: time("created_at"),
            update_time: time("updated_at"),
            title: row.get("title"),
            member_ids,
            last_activity_time: time("last_activity_at"),
            message_count: row.get("message_count"),
            last_seq: row.get("last_seq"),
        },
    }
}

pub(crate) fn message(row: &PgRow) -> pb::Message {
    let optional = |column: &str| row.get::<Option<chrono::DateTime<chrono::Utc>>, _>(column).map(timestamp);
    pb::Message {
        id: row.get::<Uuid, _>("id").to_string(),
        conversation_id: row.get::<Uuid, _>("conversation_id").to_string(),
        seq: row.get("seq"),
        author: Some(Actor {
            kind: i32::from(row.get::<i16, _>("author_kind")),
            id: row.get("author_id"),
            via: String::new(),
        }),
        text: row.get("text"),
        create_time: Some(timestamp(row.get("created_at"))),
        update_time: Some(timestamp(row.get("updated_at"))),
        edit_time: optional("edited_at"),
        delete_time: optional("deleted_at"),
        reply_to_message_id: row
            .get::<Option<Uuid>, _>("reply_to")
            .map(|u| u.to_string())
            .unwrap_or_default(),
        attachments: Vec::new(),
        task_id: row.get("task_id"),
    }
}

pub(crate) async fn insert_conversation(
    conn: &mut PgConnection,
    id: Uuid,
    owner: &str,
    title: &str,
    member_ids: &[String],
) -> Result<Conversation, sqlx::Error> {
    let row = sqlx::query(&format!(
        "INSERT INTO conversations (id, owner, title, member_ids) VALUES ($1, $2, $3, $4) RETURNING {CONVERSATION_COLUMNS}"
    ))
    .bind(id)
    .bind(owner)
    .bind(title)
    .bind(member_ids)
    .fetch_one(conn)
    .await?;
    Ok(conversation(&row))
}

/// A live (not deleted) conversation, whoever may see it; `lock` takes its row lock, which
/// serialises every writer of the conversation and so its seqs.
pub(crate) async fn conversation_by_id(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<Conversation>, sqlx::Error> {
    let sql = format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND deleted_at IS NULL{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
    Ok(row.as_ref().map(conversation))
}

/// Conversations `user` owns or belongs to, most recent activity first, after the cursor.
pub(crate) async fn list_conversations(
    pool: &PgPool,
    user: &str,
    after: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Conversation>, sqlx::Error> {
    // Two index scans (owned, member of) merged, instead of one scan filtering everything.
    let rows = sqlx::query(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM ( \
           SELECT * FROM conversations WHERE owner = $1 AND deleted_at IS NULL \
           UNION SELECT * FROM conversations WHERE member_ids @> ARRAY[$1] AND deleted_at IS NULL) c \
         WHERE ($2::timestamptz IS NULL OR (last_activity_at, id) < ($2, $3)) \
         ORDER BY last_activity_at DESC, id DESC LIMIT $4"
    ))
    .bind(user)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(conversation).collect())
}

/// What a durable event changes besides the seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// A message was posted (+1), edited (0) or deleted (-1): activity, and the live count.
    Messages(i64),
    /// The conversation itself changed: no message activity.
    Conversation,
}

/// Inside the writer's transaction (row locked): the conversation's next seq.
pub(crate) async fn next_seq(conn: &mut PgConnection, id: Uuid, change: Change) -> Result<i64, sqlx::Error> {
    let (activity, messages) = match change {
        Change::Messages(delta) => (true, delta),
        Change::Conversation => (false, 0),
    };
    sqlx::query_scalar(
        "UPDATE conversations SET last_seq = last_seq + 1, message_count = message_count + $2, \
         last_activity_at = CASE WHEN $3 THEN now() ELSE last_activity_at END WHERE id = $1 RETURNING last_seq",
    )
    .bind(id)
    .bind(messages)
    .bind(activity)
    .fetch_one(conn)
    .await
}

/// Records a durable event for replays.
pub(crate) async fn append_event(
    conn: &mut PgConnection,
    id: Uuid,
    event: &pb::ConversationEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO conversation_events (conversation_id, seq, event) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(event.seq)
        .bind(event.encode_to_vec())
        .execute(conn)
        .await
        .map(drop)
}

/// Durable events after `after`, oldest first, at most `limit`.
pub(crate) async fn events_after(
    pool: &PgPool,
    id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<pb::ConversationEvent>, sqlx::Error> {
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT event FROM conversation_events WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|bytes| {
            pb::ConversationEvent::decode(bytes.as_slice()).map_err(|e| sqlx::Error::Decode(Box::new(e)))
        })
        .collect()
}

/// Messages of conversation `id` by their ids, in no particular order.
pub(crate) async fn messages_by_ids(
    pool: &PgPool,
    id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<pb::Message>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND id = ANY($2)"
    ))
    .bind(id)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(message).collect())
}

/// A message to insert.
#[derive(Debug)]
pub(crate) struct NewMessage<'a> {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub seq: i64,
    pub author: &'a Actor,
    pub text: &'a str,
    pub reply_to: Option<Uuid>,
    pub task_id: &'a str,
}

pub(crate) async fn insert_message(
    conn: &mut PgConnection,
    new: &NewMessage<'_>,
) -> Result<pb::Message, sqlx::Error> {
    let row = sqlx::query(&format!(
        "INSERT INTO messages (id, conversation_id, seq, author_kind, author_id, text, reply_to, task_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {MESSAGE_COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.conversation_id)
    .bind(new.seq)
    .bind(new.author.kind as i16)
    .bind(&new.author.id)
    .bind(new.text)
    .bind(new.reply_to)
    .bind(new.task_id)
    .fetch_one(conn)
    .await?;
    Ok(message(&row))
}

/// A message and the id of its (live) conversation.
pub(crate) async fn message_by_id(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<pb::Message>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE id = $1 \
         AND EXISTS (SELECT 1 FROM conversations c WHERE c.id = m.conversation_id AND c.deleted_at IS NULL)"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(message))
}

/// Whether `id` is a message of conversation `conversation`.
pub(crate) async fn message_in(
    conn: &mut PgConnection,
    conversation: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1 AND conversation_id = $2)")
        .bind(id)
        .bind(conversation)
        .fetch_one(conn)
        .await
}

/// Replaces a message's text; returns it after the edit.
pub(crate) async fn edit_message(
    conn: &mut PgConnection,
    id: Uuid,
    text: &str,
) -> Result<pb::Message, sqlx::Error> {
    let row = sqlx::query(&format!(
        "UPDATE messages SET text = $2, edited_at = now(), updated_at = now() WHERE id = $1 RETURNING {MESSAGE_COLUMNS}"
    ))
    .bind(id)
    .bind(text)
    .fetch_one(conn)
    .await?;
    Ok(message(&row))
}

/// Turns a message into a tombstone; returns the tombstone.
pub(crate) async fn tombstone(conn: &mut PgConnection, id: Uuid) -> Result<pb::Message, sqlx::Error> {
    let row = sqlx::query(&format!(
        "UPDATE messages SET text = '', deleted_at = now(), updated_at = now() WHERE id = $1 RETURNING {MESSAGE_COLUMNS}"
    ))
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(message(&row))
}

/// One page of a conversation's messages in ascending seq order: older than `anchor`
/// (backward, 0 = newest) or newer than it (forward).
pub(crate) async fn list_messages(
    pool: &PgPool,
    id: Uuid,
    forward: bool,
    anchor: i64,
    limit: i64,
) -> Result<Vec<pb::Message>, sqlx::Error> {
    let sql = if forward {
        format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        )
    } else {
        format!(
            "SELECT * FROM (SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 \
             AND ($2 = 0 OR seq < $2) ORDER BY seq DESC LIMIT $3) page ORDER BY seq"
        )
    };
    let rows = sqlx::query(&sql).bind(id).bind(anchor).bind(limit).fetch_all(pool).await?;
    Ok(rows.iter().map(message).collect())
}

/// Changes title and/or members; returns the conversation after the change.
pub(crate) async fn update_conversation(
    conn: &mut PgConnection,
    id: Uuid,
    title: Option<&str>,
    member_ids: Option<&[String]>,
) -> Result<Conversation, sqlx::Error> {
    let row = sqlx::query(&format!(
        "UPDATE conversations SET title = COALESCE($2, title), member_ids = COALESCE($3, member_ids), \
         updated_at = now() WHERE id = $1 RETURNING {CONVERSATION_COLUMNS}"
    ))
    .bind(id)
    .bind(title)
    .bind(member_ids)
    .fetch_one(conn)
    .await?;
    Ok(conversation(&row))
}

/// Soft-deletes a conversation; returns when it will be purged.
pub(crate) async fn soft_delete(
    conn: &mut PgConnection,
    id: Uuid,
    retention_days: u32,
) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE conversations SET deleted_at = now(), purge_at = now() + make_interval(days => $2) \
         WHERE id = $1 RETURNING purge_at",
    )
    .bind(id)
    .bind(retention_days as i32)
    .fetch_one(conn)
    .await
}

/// Removes conversations whose retention ran out, with their messages and events.
pub(crate) async fn purge(pool: &PgPool) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM conversations WHERE deleted_at IS NOT NULL AND purge_at <= now()")
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
}
