//! Messages: posting, paging both ways, the cached latest page, edits, tombstones, retries.

use crate::harness::{Chat, conversation, post, violations};
use codingagent_kernel::identity::Caller;
use codingagent_proto::codingagent::chat::v1 as pb;
use codingagent_proto::codingagent::common::v1::ActorKind;
use tonic::Code;

fn page(
    conversation: &str,
    direction: pb::ListMessagesDirection,
    anchor: i64,
    size: i32,
) -> pb::ListMessagesRequest {
    pb::ListMessagesRequest {
        conversation_id: conversation.into(),
        direction: direction as i32,
        anchor_seq: anchor,
        page_size: size,
        page_token: String::new(),
    }
}

fn seqs(messages: &[pb::Message]) -> Vec<i64> {
    messages.iter().map(|m| m.seq).collect()
}

#[tokio::test]
async fn messages_page_both_ways_and_the_cached_page_follows_every_write() {
    let chat = Chat::start().await;
    let (mut alice, mut bob) = (chat.user("alice").await, chat.user("bob").await);
    let id = conversation(&mut alice, "history", &["bob"]).await.id;
    for n in 1..=7 {
        let client = if n % 2 == 0 { &mut bob } else { &mut alice };
        let message = post(client, &id, &format!("message {n}")).await;
        assert_eq!(message.seq, n, "seqs are gap-free");
    }
    use pb::ListMessagesDirection::{Backward, Forward};
    // Newest page (served from the cache on the second read), then older pages by token.
    for _ in 0..2 {
        let newest = alice.list_messages(page(&id, Backward, 0, 3)).await.unwrap().into_inner();
        assert_eq!(seqs(&newest.messages), [5, 6, 7], "ascending order whatever the direction");
        let older =
            pb::ListMessagesRequest { page_token: newest.next_page_token, ..page(&id, Backward, 0, 3) };
        let older = alice.list_messages(older).await.unwrap().into_inner();
        assert_eq!(seqs(&older.messages), [2, 3, 4]);
        let oldest =
            pb::ListMessagesRequest { page_token: older.next_page_token, ..page(&id, Backward, 0, 3) };
        let oldest = alice.list_messages(oldest).await.unwrap().into_inner();
        assert_eq!((seqs(&oldest.messages), oldest.next_page_token.as_str()), (vec![1], ""));
    }
    let forward = alice.list_messages(page(&id, Forward, 4, 10)).await.unwrap().into_inner();
    assert_eq!((seqs(&forward.messages), forward.next_page_token.as_str()), (vec![5, 6, 7], ""));

    // Every kind of write shows in the next cached read.
    let seventh = alice.list_messages(page(&id, Backward, 0, 1)).await.unwrap().into_inner().messages;
    let edit = pb::EditMessageRequest {
        message_id: seventh[0].id.clone(),
        text: "message 7, edited".into(),
        request_id: String::new(),
    };
    alice.edit_message(edit).await.unwrap();
    let after_edit = alice.list_messages(page(&id, Backward, 0, 2)).await.unwrap().into_inner().messages;
    assert_eq!(after_edit[1].text, "message 7, edited");
    assert!(after_edit[1].edit_time.is_some());
    post(&mut bob, &id, "message 9").await;
    let after_post = alice.list_messages(page(&id, Backward, 0, 2)).await.unwrap().into_inner().messages;
    assert_eq!(seqs(&after_post), [7, 9], "the edit took seq 8; messages keep the seq of their posting");
    let metrics = chat.metrics().await;
    let hits = metrics.lines().find(|l| l.starts_with("codingagent_chat_recent_cache_hits_total")).unwrap();
    assert!(!hits.ends_with(" 0"), "the repeated newest-page reads hit the cache: {hits}");
    chat.stop().await;
}

#[tokio::test]
async fn authors_edit_authors_or_owners_delete_and_tombstones_stay() {
    let chat = Chat::start().await;
    let (mut alice, mut bob, mut eve) =
        (chat.user("alice").await, chat.user("bob").await, chat.user("eve").await);
    let id = conversation(&mut alice, "rules", &["bob"]).await.id;
    let bobs = post(&mut bob, &id, "bob wrote this").await;
    let edit = |text: &str| pb::EditMessageRequest {
        message_id: bobs.id.clone(),
        text: text.into(),
        request_id: String::new(),
    };
    assert_eq!(alice.edit_message(edit("alice rewrites")).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(eve.edit_message(edit("eve rewrites")).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(violations(&bob.edit_message(edit("")).await.unwrap_err()), ["text"]);
    bob.edit_message(edit("bob fixed a typo")).await.unwrap();

    let alices = post(&mut alice, &id, "alice wrote this").await;
    let delete = |message: &pb::Message| pb::DeleteMessageRequest {
        message_id: message.id.clone(),
        request_id: String::new(),
    };
    assert_eq!(bob.delete_message(delete(&alices)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(eve.delete_message(delete(&bobs)).await.unwrap_err().code(), Code::NotFound);
    let tombstone = alice.delete_message(delete(&bobs)).await.unwrap().into_inner().message.unwrap();
    assert_eq!((tombstone.text.as_str(), tombstone.seq), ("", bobs.seq));
    assert!(tombstone.delete_time.is_some());
    let again = alice.delete_message(delete(&bobs)).await.unwrap().into_inner().message.unwrap();
    assert_eq!(again, tombstone, "deleting again returns the same tombstone");
    assert_eq!(bob.edit_message(edit("revive")).await.unwrap_err().code(), Code::FailedPrecondition);
    let listed = alice
        .list_messages(pb::ListMessagesRequest { conversation_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(listed.len(), 2, "the tombstone keeps its place");
    let conversation = alice
        .get_conversation(pb::GetConversationRequest { conversation_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(conversation.conversation.unwrap().message_count, 1);
    chat.stop().await;
}

#[tokio::test]
async fn a_retried_post_posts_once_and_the_assistant_posts_as_itself() {
    let chat = Chat::start().await;
    let mut alice = chat.user("alice").await;
    let id = conversation(&mut alice, "retries", &[]).await.id;
    let send = pb::PostMessageRequest {
        conversation_id: id.clone(),
        text: "please add retries to the HTTP client".into(),
        request_id: "5d1c2b9e".into(),
        ..Default::default()
    };
    let first = alice.post_message(send.clone()).await.unwrap().into_inner().message.unwrap();
    let retry = alice.post_message(send).await.unwrap().into_inner().message.unwrap();
    assert_eq!(first, retry);

    let mut assistant = chat.client_for(Caller::service("assistant")).await;
    let reply = pb::PostMessageRequest {
        conversation_id: id.clone(),
        text: "On it.".into(),
        reply_to_message_id: first.id.clone(),
        task_id: "task-1".into(),
        ..Default::default()
    };
    let answer = assistant.post_message(reply).await.unwrap().into_inner().message.unwrap();
    let author = answer.author.unwrap();
    assert_eq!((author.kind, author.id.as_str()), (ActorKind::Service as i32, "assistant"));
    assert_eq!(answer.reply_to_message_id, first.id);
    let listed = alice
        .list_messages(pb::ListMessagesRequest { conversation_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seqs(&listed.messages), [1, 2]);
    chat.stop().await;
}

#[tokio::test]
async fn bad_messages_name_every_field_and_store_nothing() {
    let chat = Chat::start().await;
    let (mut alice, mut eve) = (chat.user("alice").await, chat.user("eve").await);
    let id = conversation(&mut alice, "limits", &[]).await.id;
    let bad = pb::PostMessageRequest {
        conversation_id: id.clone(),
        text: "x".repeat(32_001),
        attachment_ids: vec!["upload-1".into()],
        reply_to_message_id: "nope".into(),
        ..Default::default()
    };
    assert_eq!(
        violations(&alice.post_message(bad).await.unwrap_err()),
        ["text", "attachment_ids[0]", "reply_to_message_id"]
    );
    let empty =
        pb::PostMessageRequest { conversation_id: id.clone(), text: "  ".into(), ..Default::default() };
    assert_eq!(violations(&alice.post_message(empty).await.unwrap_err()), ["text"]);
    let other = conversation(&mut alice, "other", &[]).await.id;
    let elsewhere = post(&mut alice, &other, "elsewhere").await;
    let wrong_reply = pb::PostMessageRequest {
        conversation_id: id.clone(),
        text: "re".into(),
        reply_to_message_id: elsewhere.id,
        ..Default::default()
    };
    assert_eq!(violations(&alice.post_message(wrong_reply).await.unwrap_err()), ["reply_to_message_id"]);
    let intruder =
        pb::PostMessageRequest { conversation_id: id.clone(), text: "hi".into(), ..Default::default() };
    assert_eq!(eve.post_message(intruder).await.unwrap_err().code(), Code::NotFound);
    let peek = pb::ListMessagesRequest { conversation_id: id.clone(), ..Default::default() };
    assert_eq!(eve.list_messages(peek).await.unwrap_err().code(), Code::NotFound);
    let negative = pb::ListMessagesRequest {
        conversation_id: id.clone(),
        anchor_seq: -1,
        page_size: -5,
        ..Default::default()
    };
    assert_eq!(violations(&alice.list_messages(negative).await.unwrap_err()), ["anchor_seq", "page_size"]);
    let listed = alice
        .list_messages(pb::ListMessagesRequest { conversation_id: id, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.messages.is_empty(), "nothing partial was stored");
    chat.stop().await;
}

#[tokio::test]
async fn the_cached_page_is_only_served_to_those_who_may_see_it() {
    let chat = Chat::start().await;
    let (mut alice, mut bob, mut eve) =
        (chat.user("alice").await, chat.user("bob").await, chat.user("eve").await);
    let id = conversation(&mut alice, "cached access", &["bob"]).await.id;
    post(&mut alice, &id, "members only").await;
    let newest = pb::ListMessagesRequest { conversation_id: id.clone(), ..Default::default() };
    for _ in 0..2 {
        assert_eq!(bob.list_messages(newest.clone()).await.unwrap().into_inner().messages.len(), 1);
    }
    assert_eq!(
        eve.list_messages(newest.clone()).await.unwrap_err().code(),
        Code::NotFound,
        "a cache hit checks access too"
    );
    let remove = pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation { id: id.clone(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["member_ids".into()] }),
        request_id: String::new(),
    };
    alice.update_conversation(remove).await.unwrap();
    assert_eq!(
        bob.list_messages(newest).await.unwrap_err().code(),
        Code::NotFound,
        "removal invalidates the entry"
    );
    chat.stop().await;
}

#[tokio::test]
async fn a_service_acting_for_a_user_posts_as_that_user_and_rights_follow_the_user() {
    let chat = Chat::start().await;
    let mut alice = chat.user("alice").await;
    let id = conversation(&mut alice, "on behalf", &["bob"]).await.id;
    let mut for_alice = chat.client_for(Caller::service_for("gateway", "alice", vec![])).await;
    let mut for_bob = chat.client_for(Caller::service_for("gateway", "bob", vec![])).await;

    let posted = post(&mut for_alice, &id, "sent through the gateway").await;
    let author = posted.author.clone().unwrap();
    assert_eq!(
        (author.kind, author.id.as_str()),
        (ActorKind::User as i32, "alice"),
        "the author is the user the service acts for, not the service"
    );

    // Bob, through the same service, is only a member: he may neither edit nor delete it.
    let edit = |text: &str| pb::EditMessageRequest {
        message_id: posted.id.clone(),
        text: text.into(),
        request_id: String::new(),
    };
    let delete = pb::DeleteMessageRequest { message_id: posted.id.clone(), request_id: String::new() };
    assert_eq!(for_bob.edit_message(edit("bob rewrites")).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(for_bob.delete_message(delete.clone()).await.unwrap_err().code(), Code::PermissionDenied);
    // Alice may, directly or through the service.
    alice.edit_message(edit("alice fixed a typo")).await.unwrap();
    let tombstone = for_alice.delete_message(delete).await.unwrap().into_inner().message.unwrap();
    assert!(tombstone.delete_time.is_some());

    // Acting for a stranger gives no more than the stranger has.
    let mut for_eve = chat.client_for(Caller::service_for("gateway", "eve", vec![])).await;
    let intrude = pb::PostMessageRequest { conversation_id: id, text: "hi".into(), ..Default::default() };
    assert_eq!(for_eve.post_message(intrude).await.unwrap_err().code(), Code::NotFound);
    chat.stop().await;
}

#[tokio::test]
async fn nul_and_control_characters_are_refused_in_every_free_text_field() {
    let chat = Chat::start().await;
    let mut alice = chat.user("alice").await;
    let id = conversation(&mut alice, "control characters", &[]).await.id;
    let post_text = |text: &str| pb::PostMessageRequest {
        conversation_id: id.clone(),
        text: text.into(),
        ..Default::default()
    };
    // NUL used to reach PostgreSQL and come back as INTERNAL.
    assert_eq!(violations(&alice.post_message(post_text("before\0after")).await.unwrap_err()), ["text"]);
    // U+0002/U+0003 are the search snippets' highlight marks: a message may not carry them.
    let forged = post_text("plain \u{2}forged\u{3} highlight");
    assert_eq!(violations(&alice.post_message(forged).await.unwrap_err()), ["text"]);
    let task = pb::PostMessageRequest { task_id: "task\0".into(), ..post_text("fine") };
    assert_eq!(violations(&alice.post_message(task).await.unwrap_err()), ["task_id"]);
    // Tabs and line breaks are text.
    let kept = post(&mut alice, &id, "line one\n\tline two\r\n").await;
    let edit = pb::EditMessageRequest {
        message_id: kept.id.clone(),
        text: "bell\u{7}".into(),
        request_id: String::new(),
    };
    assert_eq!(violations(&alice.edit_message(edit).await.unwrap_err()), ["text"]);

    let create = pb::CreateConversationRequest {
        title: "title\0".into(),
        member_ids: vec!["bob".into(), "mallory\u{3}".into()],
        request_id: String::new(),
    };
    assert_eq!(violations(&alice.create_conversation(create).await.unwrap_err()), ["title", "member_ids[1]"]);
    let rename = pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation {
            id: id.clone(),
            title: "new\u{2}".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["title".into()] }),
        request_id: String::new(),
    };
    assert_eq!(violations(&alice.update_conversation(rename).await.unwrap_err()), ["conversation.title"]);
    let search = pb::SearchMessagesRequest { query: "forged\0".into(), ..Default::default() };
    assert_eq!(violations(&alice.search_messages(search).await.unwrap_err()), ["query"]);

    // Nothing was stored, so nothing can be found or highlighted.
    let search = pb::SearchMessagesRequest { query: "forged".into(), ..Default::default() };
    assert!(alice.search_messages(search).await.unwrap().into_inner().results.is_empty());
    let listed = alice
        .list_messages(pb::ListMessagesRequest { conversation_id: id, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(listed.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["line one\n\tline two\r\n"]);
    chat.stop().await;
}
