//! Attachments: upload over HTTP, attach by posting, read back only by those who may.

use crate::harness::{Chat, conversation, violations};
use codingagent_kernel::identity::IDENTITY_HEADER;
use codingagent_proto::codingagent::chat::v1 as pb;
use tonic::Code;

const BOUNDARY: &str = "codingagent-test-boundary";

/// A multipart body with one part named `file`; `disposition_name` is written raw, so tests
/// can send bytes that are not UTF-8.
fn multipart(disposition_name: &[u8], content_type: Option<&str>, bytes: &[u8]) -> Vec<u8> {
    let mut body =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"").into_bytes();
    body.extend_from_slice(disposition_name);
    body.extend_from_slice(b"\"\r\n");
    if let Some(content_type) = content_type {
        body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    }
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(chat: &Chat, user: &str, conversation: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/conversations/{conversation}/attachments", chat.addr))
        .header(IDENTITY_HEADER, chat.token(user))
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn download(chat: &Chat, user: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{}{path}", chat.addr))
        .header(IDENTITY_HEADER, chat.token(user))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_upload_joins_a_message_and_only_participants_read_it() {
    let chat = Chat::start().await;
    let (mut alice, mut bob, mut eve) =
        (chat.user("alice").await, chat.user("bob").await, chat.user("eve").await);
    let id = conversation(&mut alice, "files", &["bob"]).await.id;
    let notes = "# Repro\n\n1. log in\n2. wait 30 s\n".as_bytes();
    let (status, uploaded) = upload(&chat, "alice", &id, multipart(b"../notes.md", None, notes)).await;
    assert_eq!(status, 201, "{uploaded}");
    assert_eq!(uploaded["filename"], "notes.md", "path components are stripped");
    assert_eq!(uploaded["contentType"], "text/markdown");
    assert_eq!(uploaded["sizeBytes"], notes.len().to_string());
    let attachment_id = uploaded["id"].as_str().unwrap().to_owned();
    let path = uploaded["downloadPath"].as_str().unwrap().to_owned();

    // Pending: only the uploader sees it.
    let get = |id: &str| pb::GetAttachmentRequest { attachment_id: id.into() };
    assert_eq!(bob.get_attachment(get(&attachment_id)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(download(&chat, "bob", &path).await.status().as_u16(), 404);
    let list = |include_unattached: bool| pb::ListAttachmentsRequest {
        conversation_id: id.clone(),
        include_unattached,
        ..Default::default()
    };
    assert_eq!(alice.list_attachments(list(true)).await.unwrap().into_inner().attachments.len(), 1);
    assert!(alice.list_attachments(list(false)).await.unwrap().into_inner().attachments.is_empty());

    // Someone else cannot post alice's upload.
    let by_bob = pb::PostMessageRequest {
        conversation_id: id.clone(),
        attachment_ids: vec![attachment_id.clone()],
        ..Default::default()
    };
    assert_eq!(violations(&bob.post_message(by_bob).await.unwrap_err()), ["attachment_ids[0]"]);
    let posted = alice
        .post_message(pb::PostMessageRequest {
            conversation_id: id.clone(),
            text: String::new(),
            attachment_ids: vec![attachment_id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert_eq!(posted.attachments.len(), 1, "a message may be only attachments");
    assert_eq!(posted.attachments[0].message_id, posted.id);
    let again = pb::PostMessageRequest {
        conversation_id: id.clone(),
        text: "again".into(),
        attachment_ids: vec![attachment_id.clone()],
        ..Default::default()
    };
    assert_eq!(
        violations(&alice.post_message(again).await.unwrap_err()),
        ["attachment_ids[0]"],
        "an upload joins one message"
    );

    // Posted: members read it, others cannot even tell it exists.
    let seen = bob.get_attachment(get(&attachment_id)).await.unwrap().into_inner().attachment.unwrap();
    assert_eq!(seen.sha256.len(), 64);
    let fetched = download(&chat, "bob", &path).await;
    assert_eq!(fetched.status().as_u16(), 200);
    assert_eq!(fetched.headers()["content-type"], "text/markdown");
    assert_eq!(fetched.headers()["x-content-type-options"], "nosniff");
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), notes);
    assert_eq!(eve.get_attachment(get(&attachment_id)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(eve.list_attachments(list(false)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(download(&chat, "eve", &path).await.status().as_u16(), 404);
    let listed = bob
        .list_messages(pb::ListMessagesRequest { conversation_id: id.clone(), ..Default::default() })
        .await;
    assert_eq!(listed.unwrap().into_inner().messages[0].attachments.len(), 1);

    // Deleting the message deletes the file.
    alice
        .delete_message(pb::DeleteMessageRequest { message_id: posted.id, request_id: String::new() })
        .await
        .unwrap();
    assert_eq!(download(&chat, "alice", &path).await.status().as_u16(), 404);
    assert_eq!(alice.get_attachment(get(&attachment_id)).await.unwrap_err().code(), Code::NotFound);
    chat.stop().await;
}

#[tokio::test]
async fn bad_uploads_get_precise_statuses_and_store_nothing() {
    let chat = Chat::start().await;
    let mut alice = chat.user("alice").await;
    let id = conversation(&mut alice, "bad files", &[]).await.id;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("oversized", multipart(b"big.txt", Some("text/plain"), &vec![b'a'; 64 * 1024 + 1]), 413, "FILE_TOO_LARGE"),
        ("html", multipart(b"page.txt", Some("text/plain"), b"<!DOCTYPE html><script>alert(1)</script>"), 415, "UNSUPPORTED_CONTENT_TYPE"),
        ("lying png", multipart(b"x.png", Some("image/png"), b"just text"), 415, "UNSUPPORTED_CONTENT_TYPE"),
        ("executable", multipart(b"setup.exe", None, b"MZ\x90\x00\x03\x00\x00\x00\x04"), 415, "UNSUPPORTED_CONTENT_TYPE"),
        ("invalid utf-8 name", multipart(b"bad\xff\xfe.txt", Some("text/plain"), b"fine"), 400, "INVALID_ARGUMENT"),
        ("empty", multipart(b"empty.txt", Some("text/plain"), b""), 400, "INVALID_ARGUMENT"),
        ("no file part", format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--{BOUNDARY}--\r\n").into_bytes(), 400, "INVALID_ARGUMENT"),
    ];
    for (name, body, expected, reason) in cases {
        let (status, answer) = upload(&chat, "alice", &id, body).await;
        assert_eq!(status, expected, "{name}: {answer}");
        assert_eq!(answer["error"]["reason"], reason, "{name}: {answer}");
    }
    let (status, answer) = upload(&chat, "eve", &id, multipart(b"a.txt", None, b"hello")).await;
    assert_eq!(
        (status, answer["error"]["reason"].as_str()),
        (404, Some("NOT_FOUND")),
        "a stranger cannot upload into the conversation"
    );
    let (status, answer) = upload(&chat, "alice", "not-an-id", multipart(b"a.txt", None, b"hello")).await;
    assert_eq!(
        (status, answer["error"]["field_violations"][0]["field"].as_str()),
        (400, Some("conversation_id"))
    );
    let pending =
        pb::ListAttachmentsRequest { conversation_id: id, include_unattached: true, ..Default::default() };
    assert!(
        alice.list_attachments(pending).await.unwrap().into_inner().attachments.is_empty(),
        "nothing was stored"
    );
    chat.stop().await;
}
