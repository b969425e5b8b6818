//! Attachments: bytes in object storage (a local directory, or an S3-compatible bucket),
//! metadata in PostgreSQL. Uploads and downloads are plain HTTP on the chat port (the gateway
//! routes them); metadata is read through GetAttachment and ListAttachments, and an upload
//! joins a message when PostMessage names it.

use crate::access::role;
use crate::config::{AttachmentsConfig, StoreKind};
use crate::convert::timestamp;
use crate::error::{ChatError, Result};
use crate::store;
use codingagent_kernel::pagination;
use codingagent_proto::codingagent::chat::v1 as pb;
use object_store::ObjectStore;
use object_store::path::Path;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

const COLUMNS: &str = "id, conversation_id, message_id, owner, created_at, updated_at, filename, content_type, size_bytes, sha256";

/// The object store and the limits uploads obey.
#[derive(Debug, Clone)]
pub(crate) struct Attachments {
    pub store: Arc<dyn ObjectStore>,
    pub max_bytes: u64,
    pub unattached_ttl_hours: u32,
}

impl Attachments {
    pub(crate) fn new(config: &AttachmentsConfig) -> anyhow::Result<Self> {
        let store: Arc<dyn ObjectStore> = match config.store {
            StoreKind::Local => {
                std::fs::create_dir_all(&config.local_dir)?;
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&config.local_dir)?)
            }
            StoreKind::S3 => {
                let s3 = &config.s3;
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.allow_http);
                if !s3.endpoint.is_empty() {
                    builder = builder.with_endpoint(&s3.endpoint);
                }
                if !s3.access_key_id.is_empty() {
                    builder = builder
                        .with_access_key_id(&s3.access_key_id)
                        .with_secret_access_key(s3.secret_access_key.expose());
                }
                Arc::new(builder.build()?)
            }
        };
        Ok(Self { store, max_bytes: config.max_bytes, unattached_ttl_hours: config.unattached_ttl_hours })
    }

    /// Deletes stored bytes; a failure leaves an orphaned object, never a broken row.
    pub(crate) async fn delete_objects(&self, keys: &[(Uuid, Uuid)]) {
        for (conversation, id) in keys {
            if let Err(error) = self.store.delete(&object_path(*conversation, *id)).await {
                tracing::warn!(%error, %id, "cannot delete an attachment's bytes");
            }
        }
    }
}

pub(crate) fn object_path(conversation: Uuid, id: Uuid) -> Path {
    Path::from(format!("conversations/{conversation}/{id}"))
}

pub(crate) fn download_path(conversation: &str, id: &str) -> String {
    format!("/v1/conversations/{conversation}/attachments/{id}/content")
}

pub(crate) fn attachment(row: &PgRow) -> pb::Attachment {
    let conversation = row.get::<Uuid, _>("conversation_id").to_string();
    let id = row.get::<Uuid, _>("id").to_string();
    pb::Attachment {
        download_path: download_path(&conversation, &id),
        id,
        conversation_id: conversation,
        message_id: row.get::<Option<Uuid>, _>("message_id").map(|m| m.to_string()).unwrap_or_default(),
        owner: row.get("owner"),
        create_time: Some(timestamp(row.get("created_at"))),
        update_time: Some(timestamp(row.get("updated_at"))),
        filename: row.get("filename"),
        content_type: row.get("content_type"),
        size_bytes: row.get("size_bytes"),
        sha256: row.get("sha256"),
    }
}

/// An upload to record.
#[derive(Debug)]
pub(crate) struct NewAttachment<'a> {
    pub id: Uuid,
    pub conversation: Uuid,
    pub owner: &'a str,
    pub filename: &'a str,
    pub content_type: &'a str,
    pub size_bytes: i64,
    pub sha256: &'a str,
}

pub(crate) async fn insert(pool: &PgPool, new: &NewAttachment<'_>) -> Result<pb::Attachment, sqlx::Error> {
    let row = sqlx::query(&format!(
        "INSERT INTO attachments (id, conversation_id, owner, filename, content_type, size_bytes, sha256) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.conversation)
    .bind(new.owner)
    .bind(new.filename)
    .bind(new.content_type)
    .bind(new.size_bytes)
    .bind(new.sha256)
    .fetch_one(pool)
    .await?;
    Ok(attachment(&row))
}

/// An attachment the caller may see: its conversation is visible to them, and it is either
/// posted with a message or their own upload. NOT_FOUND otherwise.
pub(crate) async fn visible(
    conn: &mut PgConnection,
    caller: &codingagent_kernel::identity::Caller,
    id: Uuid,
) -> Result<pb::Attachment> {
    let not_found = || ChatError::not_found("attachment", id.to_string());
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM attachments WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(not_found)?;
    let found = attachment(&row);
    let conversation_id: Uuid = row.get("conversation_id");
    let conversation =
        store::conversation_by_id(conn, conversation_id, false).await?.ok_or_else(not_found)?;
    role(&conversation, caller).map_err(|_| not_found())?;
    let uploader = caller.user_id().unwrap_or(&caller.subject);
    if found.message_id.is_empty() && found.owner != uploader {
        return Err(not_found());
    }
    Ok(found)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    created_at: chrono::DateTime<chrono::Utc>,
    id: Uuid,
    unattached: bool,
}

/// A conversation's attachments, newest first: posted ones, plus the caller's own pending
/// uploads when asked.
pub(crate) async fn list(
    pool: &PgPool,
    conversation: Uuid,
    uploader: &str,
    include_unattached: bool,
    page_size: i32,
    page_token: &str,
) -> Result<(Vec<pb::Attachment>, String)> {
    let limit = pagination::page_size(page_size, 50, 200)?;
    let cursor: Option<Cursor> = pagination::decode(page_token)?;
    if cursor.as_ref().is_some_and(|c| c.unattached != include_unattached) {
        return Err(ChatError::invalid("page_token", "was issued with a different include_unattached"));
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM attachments WHERE conversation_id = $1 \
         AND (message_id IS NOT NULL OR ($2 AND owner = $3)) \
         AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5)) ORDER BY created_at DESC, id DESC LIMIT $6"
    ))
    .bind(conversation)
    .bind(include_unattached)
    .bind(uploader)
    .bind(cursor.as_ref().map(|c| c.created_at))
    .bind(cursor.as_ref().map(|c| c.id))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let rows: Vec<(pb::Attachment, chrono::DateTime<chrono::Utc>, Uuid)> =
        rows.iter().map(|r| (attachment(r), r.get("created_at"), r.get("id"))).collect();
    let (rows, token) = pagination::page(rows, limit, |(_, created_at, id)| Cursor {
        created_at: *created_at,
        id: *id,
        unattached: include_unattached,
    });
    Ok((rows.into_iter().map(|r| r.0).collect(), token))
}

/// Inside PostMessage's transaction: attaches the caller's pending uploads `ids` (in order)
/// to `message`. `Err` lists the indexes of ids that are not such uploads.
pub(crate) async fn attach(
    conn: &mut PgConnection,
    conversation: Uuid,
    uploader: &str,
    ids: &[Uuid],
    message: Uuid,
) -> Result<Result<Vec<pb::Attachment>, Vec<usize>>, sqlx::Error> {
    let mut attached = Vec::with_capacity(ids.len());
    let mut bad = Vec::new();
    for (position, id) in ids.iter().enumerate() {
        let row = sqlx::query(&format!(
            "UPDATE attachments SET message_id = $1, position = $2, updated_at = now() \
             WHERE id = $3 AND conversation_id = $4 AND owner = $5 AND message_id IS NULL RETURNING {COLUMNS}"
        ))
        .bind(message)
        .bind(position as i16)
        .bind(id)
        .bind(conversation)
        .bind(uploader)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some(row) => attached.push(attachment(&row)),
            None => bad.push(position),
        }
    }
    Ok(if bad.is_empty() { Ok(attached) } else { Err(bad) })
}

/// The attachments of `messages`, in posting order, by message id.
pub(crate) async fn of_messages<'c>(
    db: impl sqlx::PgExecutor<'c>,
    messages: &[Uuid],
) -> Result<HashMap<Uuid, Vec<pb::Attachment>>, sqlx::Error> {
    if messages.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM attachments WHERE message_id = ANY($1) ORDER BY message_id, position"
    ))
    .bind(messages)
    .fetch_all(db)
    .await?;
    let mut out: HashMap<Uuid, Vec<pb::Attachment>> = HashMap::new();
    for row in &rows {
        out.entry(row.get("message_id")).or_default().push(attachment(row));
    }
    Ok(out)
}

/// Fills in the attachments of live messages (tombstones have none).
pub(crate) async fn fill<'c>(
    db: impl sqlx::PgExecutor<'c>,
    messages: &mut [pb::Message],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = messages
        .iter()
        .filter(|m| m.delete_time.is_none())
        .filter_map(|m| Uuid::parse_str(&m.id).ok())
        .collect();
    let mut found = of_messages(db, &ids).await?;
    for message in messages.iter_mut() {
        if let Some(attachments) = Uuid::parse_str(&message.id).ok().and_then(|id| found.remove(&id)) {
            message.attachments = attachments;
        }
    }
    Ok(())
}

/// Inside DeleteMessage's transaction: removes the message's attachment rows; returns the
/// objects to delete once it commits.
pub(crate) async fn detach_all(
    conn: &mut PgConnection,
    message: Uuid,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let rows = sqlx::query("DELETE FROM attachments WHERE message_id = $1 RETURNING conversation_id, id")
        .bind(message)
        .fetch_all(conn)
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Uploads never posted within the TTL, and the attachments of conversations about to be
/// purged: their rows go now, their objects right after.
pub(crate) async fn purge(
    pool: &PgPool,
    unattached_ttl_hours: u32,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let rows = sqlx::query(
        "DELETE FROM attachments WHERE (message_id IS NULL AND created_at < now() - make_interval(hours => $1)) \
         OR conversation_id IN (SELECT id FROM conversations WHERE deleted_at IS NOT NULL AND purge_at <= now()) \
         RETURNING conversation_id, id",
    )
    .bind(unattached_ttl_hours as i32)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
