//! The HTTP side of attachments: `POST /v1/conversations/{id}/attachments` (multipart, one
//! part named `file`) and `GET /v1/conversations/{id}/attachments/{attachment}/content`.
//! Errors are JSON with the same reason codes and field violations as the gRPC API.

use crate::attachments::{self, NewAttachment, object_path};
use crate::engine::Engine;
use crate::error::ChatError;
use crate::store;
use crate::upload::{self, Refusal};
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use codingagent_kernel::error::{DbErrorKind, FieldViolation};
use codingagent_kernel::http_status::http_status;
use codingagent_kernel::identity::Caller;
use codingagent_proto::codingagent::chat::v1 as pb;
use http::{HeaderValue, StatusCode, header};
use object_store::PutPayload;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use uuid::Uuid;

/// Bytes sniffed for the content type.
const HEAD: usize = 512;

pub(crate) fn routes(engine: Arc<Engine>) -> Router {
    // Multipart framing adds a little to the file; anything beyond is refused before reading.
    let limit = engine.attachments.max_bytes as usize + 64 * 1024;
    Router::new()
        .route("/v1/conversations/{conversation}/attachments", post(upload))
        .route("/v1/conversations/{conversation}/attachments/{attachment}/content", get(download))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(engine)
}

fn error(status: StatusCode, reason: &str, message: impl Into<String>, field: Option<&str>) -> Response {
    let message = message.into();
    let violations: Vec<_> = field.map(|f| FieldViolation::new(f, message.clone())).into_iter().collect();
    body(status, reason, &message, &violations)
}

fn body(status: StatusCode, reason: &str, message: &str, violations: &[FieldViolation]) -> Response {
    let violations: Vec<_> =
        violations.iter().map(|v| json!({ "field": v.field, "description": v.description })).collect();
    let body = json!({ "error": { "status": status.as_u16(), "reason": reason, "message": message, "field_violations": violations } });
    (status, Json(body)).into_response()
}

/// A chat error as the routes answer it: the HTTP status from the one gRPC→HTTP table, the
/// reason gRPC clients get in ErrorInfo, every field violation, and `Retry-After` when the
/// error says when to retry.
fn from_chat(failure: ChatError) -> Response {
    let (reason, retry_after) = match &failure {
        ChatError::Invalid(_) => ("INVALID_ARGUMENT", None),
        ChatError::NotFound { .. } => ("NOT_FOUND", None),
        ChatError::Denied(reason, _) | ChatError::FailedPrecondition(reason, _) => (*reason, None),
        ChatError::OutOfRange(_) => ("OUT_OF_RANGE", None),
        ChatError::RateLimited(_, retry) => ("RATE_LIMITED", Some(*retry)),
        ChatError::Database(e) => match DbErrorKind::of(e) {
            DbErrorKind::Unavailable => ("DATABASE_UNAVAILABLE", None),
            DbErrorKind::Conflict => ("CONFLICT", None),
            DbErrorKind::Cancelled => ("QUERY_CANCELLED", None),
            _ => ("INTERNAL", None),
        },
        ChatError::Status(status) => {
            (if status.code() == tonic::Code::Internal { "INTERNAL" } else { "ERROR" }, None)
        }
    };
    let violations = match &failure {
        ChatError::Invalid(violations) => violations.clone(),
        _ => Vec::new(),
    };
    // The conversion logs internal causes once and keeps them out of the message.
    let status = tonic::Status::from(failure);
    let code = http_status(status.code());
    let mut response = body(code, reason, status.message(), &violations);
    if let Some(retry) = retry_after {
        let seconds = retry.as_millis().div_ceil(1000).to_string();
        if let Ok(value) = HeaderValue::from_str(&seconds) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Unsupported(why) => {
            error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_CONTENT_TYPE", why, Some("file"))
        }
        Refusal::Invalid { field, reason } => {
            error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", reason, Some(field))
        }
    }
}

/// The conversation, if the caller may see it.
async fn conversation(engine: &Engine, caller: &Caller, raw: &str) -> Result<store::Conversation, Response> {
    let id = Uuid::parse_str(raw).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "must be an id this service returned",
            Some("conversation_id"),
        )
    })?;
    crate::conversations::visible(engine, caller, id).await.map_err(from_chat)
}

async fn upload(
    State(engine): State<Arc<Engine>>,
    Extension(caller): Extension<Caller>,
    Path(conversation_id): Path<String>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let conversation = match conversation(&engine, &caller, &conversation_id).await {
        Ok(conversation) => conversation,
        Err(response) => return response,
    };
    let mut multipart = match multipart {
        Ok(multipart) => multipart,
        Err(rejection) => {
            return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", rejection.body_text(), Some("file"));
        }
    };
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "FILE_TOO_LARGE",
            format!("files may be at most {} bytes", engine.attachments.max_bytes),
            Some("file"),
        )
    };
    let mut field = loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => break field,
            Ok(Some(_)) => continue,
            Ok(None) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "no part named `file`",
                    Some("file"),
                );
            }
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_large(),
            Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", e.body_text(), Some("file")),
        }
    };
    let disposition =
        field.headers().get(header::CONTENT_DISPOSITION).map(HeaderValue::as_bytes).unwrap_or_default();
    let filename = match upload::filename(disposition) {
        Ok(name) => name,
        Err(refusal) => return refused(refusal),
    };
    let declared = field.content_type().map(str::to_owned);
    let mut chunks = Vec::new();
    let mut size: u64 = 0;
    let mut digest = Sha256::new();
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                size += chunk.len() as u64;
                if size > engine.attachments.max_bytes {
                    return too_large();
                }
                digest.update(&chunk);
                chunks.push(chunk);
            }
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_large(),
            Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", e.body_text(), Some("file")),
        }
    }
    if size == 0 {
        return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "the file is empty", Some("file"));
    }
    let whole: Vec<u8> = chunks.concat();
    let head = &whole[..whole.len().min(HEAD)];
    let content_type =
        match upload::content_type(head, std::str::from_utf8(&whole).is_ok(), declared.as_deref(), &filename)
        {
            Ok(content_type) => content_type,
            Err(refusal) => return refused(refusal),
        };
    let id = Uuid::now_v7();
    if let Err(e) =
        engine.attachments.store.put(&object_path(conversation.id, id), PutPayload::from(whole)).await
    {
        tracing::error!(error = %e, "cannot store an attachment");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "STORAGE_UNAVAILABLE",
            "attachment storage is unavailable",
            None,
        );
    }
    let sha256: String = digest.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let uploader = caller.user_id().unwrap_or(&caller.subject).to_owned();
    let new = NewAttachment {
        id,
        conversation: conversation.id,
        owner: &uploader,
        filename: &filename,
        content_type,
        size_bytes: size as i64,
        sha256: &sha256,
    };
    match attachments::insert(&engine.pool, &new).await {
        Ok(stored) => (StatusCode::CREATED, Json(json_of(&stored))).into_response(),
        Err(e) => {
            // The row is the attachment; bytes without one are deleted again.
            engine.attachments.delete_objects(&[(conversation.id, id)]).await;
            from_chat(e.into())
        }
    }
}

/// The Attachment in the protobuf JSON mapping (camelCase, int64 as a string).
fn json_of(a: &pb::Attachment) -> serde_json::Value {
    let time = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
            .map(|t| t.to_rfc3339())
    };
    json!({
        "id": a.id,
        "conversationId": a.conversation_id,
        "messageId": a.message_id,
        "owner": a.owner,
        "createTime": time(&a.create_time),
        "updateTime": time(&a.update_time),
        "filename": a.filename,
        "contentType": a.content_type,
        "sizeBytes": a.size_bytes.to_string(),
        "sha256": a.sha256,
        "downloadPath": a.download_path,
    })
}

/// RFC 5987 encoding of a file name for `Content-Disposition`.
fn disposition(filename: &str) -> String {
    let encoded: String = filename
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename*=UTF-8''{encoded}")
}

async fn download(
    State(engine): State<Arc<Engine>>,
    Extension(caller): Extension<Caller>,
    Path((conversation_id, attachment_id)): Path<(String, String)>,
) -> Response {
    let conversation = match conversation(&engine, &caller, &conversation_id).await {
        Ok(conversation) => conversation,
        Err(response) => return response,
    };
    let Ok(id) = Uuid::parse_str(&attachment_id) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "must be an id this service returned",
            Some("attachment_id"),
        );
    };
    let found = match engine.pool.acquire().await {
        Ok(mut conn) => attachments::visible(&mut conn, &caller, id).await,
        Err(e) => Err(e.into()),
    };
    let found = match found {
        Ok(found) if found.conversation_id == conversation.proto.id => found,
        Ok(_) => return from_chat(ChatError::not_found("attachment", attachment_id)),
        Err(e) => return from_chat(e),
    };
    let bytes = match engine.attachments.store.get(&object_path(conversation.id, id)).await {
        Ok(result) => result.bytes().await,
        Err(e) => Err(e),
    };
    match bytes {
        Ok(bytes) => {
            let headers = [
                (header::CONTENT_TYPE, found.content_type.clone()),
                (header::CONTENT_DISPOSITION, disposition(&found.filename)),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            ];
            (headers, bytes).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, %id, "cannot read an attachment");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORAGE_UNAVAILABLE",
                "attachment storage is unavailable",
                None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn errors_take_their_status_from_the_table_and_rate_limits_say_when_to_retry() {
        let limited = from_chat(ChatError::RateLimited("slow down".into(), Duration::from_millis(1500)));
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "2", "whole seconds, rounded up");
        assert_eq!(json(limited).await["error"]["reason"], "RATE_LIMITED");

        let denied = from_chat(ChatError::Denied("OWNER_REQUIRED", "owners only".into()));
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        assert_eq!(json(denied).await["error"]["reason"], "OWNER_REQUIRED");
        let gone = from_chat(ChatError::FailedPrecondition("MESSAGE_DELETED", "deleted".into()));
        assert_eq!(gone.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(from_chat(ChatError::OutOfRange("beyond".into())).status(), StatusCode::BAD_REQUEST);
        let down = from_chat(ChatError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json(down).await["error"]["reason"], "DATABASE_UNAVAILABLE");

        let invalid = from_chat(ChatError::Invalid(vec![
            FieldViolation::new("a", "bad"),
            FieldViolation::new("b", "worse"),
        ]));
        assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
        let fields = json(invalid).await["error"]["field_violations"].clone();
        assert_eq!((fields[0]["field"].as_str(), fields[1]["field"].as_str()), (Some("a"), Some("b")));
    }

    #[test]
    fn download_names_survive_any_characters() {
        assert_eq!(
            disposition("résumé (v2).md"),
            "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%20%28v2%29.md"
        );
    }
}
