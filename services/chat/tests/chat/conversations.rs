//! Conversations: ownership, membership, listing, renaming, deletion, and bad input.

use crate::harness::{Chat, conversation, post, violations};
use codingagent_proto::codingagent::chat::v1 as pb;
use tonic::Code;

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
}

#[tokio::test]
async fn only_owners_and_members_see_a_conversation_and_only_owners_change_it() {
    let chat = Chat::start().await;
    let (mut alice, mut bob, mut eve) =
        (chat.user("alice").await, chat.user("bob").await, chat.user("eve").await);
    let created = conversation(&mut alice, "", &["bob"]).await;
    assert_eq!((created.title.as_str(), created.owner.as_str()), ("New conversation", "alice"));
    let id = created.id.clone();

    let seen =
        bob.get_conversation(pb::GetConversationRequest { conversation_id: id.clone() }).await.unwrap();
    assert_eq!(seen.into_inner().conversation.unwrap().id, id);
    let hidden =
        eve.get_conversation(pb::GetConversationRequest { conversation_id: id.clone() }).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);

    let rename = |title: &str| pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation { id: id.clone(), title: title.into(), ..Default::default() }),
        update_mask: mask(&["title"]),
        request_id: String::new(),
    };
    assert_eq!(bob.update_conversation(rename("mine now")).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(eve.update_conversation(rename("mine now")).await.unwrap_err().code(), Code::NotFound);
    let renamed = alice.update_conversation(rename("  Flaky login test  ")).await.unwrap().into_inner();
    let renamed = renamed.conversation.unwrap();
    assert_eq!(renamed.title, "Flaky login test");
    assert_eq!(renamed.last_seq, 1, "a rename is a durable event");

    // Members are replaced as a whole; bob loses access.
    let members = pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation {
            id: id.clone(),
            member_ids: vec!["carol".into()],
            ..Default::default()
        }),
        update_mask: mask(&["member_ids"]),
        request_id: String::new(),
    };
    alice.update_conversation(members).await.unwrap();
    let gone =
        bob.get_conversation(pb::GetConversationRequest { conversation_id: id.clone() }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    for mut other in [bob, eve] {
        let delete = pb::DeleteConversationRequest { conversation_id: id.clone(), request_id: String::new() };
        assert_eq!(other.delete_conversation(delete).await.unwrap_err().code(), Code::NotFound);
    }
    let delete = pb::DeleteConversationRequest { conversation_id: id.clone(), request_id: "del-1".into() };
    let purge = alice.delete_conversation(delete.clone()).await.unwrap().into_inner().purge_time.unwrap();
    let retried = alice.delete_conversation(delete).await.unwrap().into_inner().purge_time.unwrap();
    assert_eq!(purge, retried, "a retried delete answers like the first");
    let again = pb::DeleteConversationRequest { conversation_id: id.clone(), request_id: String::new() };
    assert_eq!(alice.delete_conversation(again).await.unwrap_err().code(), Code::NotFound);
    let after = alice.get_conversation(pb::GetConversationRequest { conversation_id: id }).await.unwrap_err();
    assert_eq!(after.code(), Code::NotFound, "a deleted conversation disappears at once");
    chat.stop().await;
}

#[tokio::test]
async fn lists_are_newest_activity_first_and_page_without_gaps() {
    let chat = Chat::start().await;
    let (mut alice, mut bob) = (chat.user("alice").await, chat.user("bob").await);
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(conversation(&mut alice, &format!("c{n}"), &[]).await.id);
    }
    let shared = conversation(&mut bob, "bob's, shared", &["alice"]).await;
    // Activity moves the oldest conversation to the top.
    post(&mut alice, &ids[0], "bumping this one").await;

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = alice
            .list_conversations(pb::ListConversationsRequest { page_size: 2, page_token: token.clone() })
            .await
            .unwrap()
            .into_inner();
        assert!(page.conversations.len() <= 2);
        seen.extend(page.conversations.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected = vec![ids[0].clone(), shared.id.clone()];
    expected.extend(ids[1..].iter().rev().cloned());
    assert_eq!(seen, expected);

    let listed = bob.list_conversations(pb::ListConversationsRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.conversations.len(), 1, "bob sees only what he owns or belongs to");

    let negative =
        alice.list_conversations(pb::ListConversationsRequest { page_size: -1, ..Default::default() }).await;
    assert_eq!(violations(&negative.unwrap_err()), ["page_size"]);
    let forged = pb::ListConversationsRequest { page_token: "not-a-token".into(), ..Default::default() };
    assert_eq!(violations(&alice.list_conversations(forged).await.unwrap_err()), ["page_token"]);
    chat.stop().await;
}

#[tokio::test]
async fn bad_conversation_input_names_every_field_and_stores_nothing() {
    let chat = Chat::start().await;
    let mut alice = chat.user("alice").await;
    let bad = pb::CreateConversationRequest {
        title: "x".repeat(201),
        member_ids: vec!["alice".into(), "bob".into(), "bob".into()],
        request_id: "far too long ".repeat(10),
    };
    let status = alice.create_conversation(bad).await.unwrap_err();
    assert_eq!(violations(&status), ["title", "member_ids[0]", "member_ids[2]", "request_id"]);
    let listed =
        alice.list_conversations(pb::ListConversationsRequest::default()).await.unwrap().into_inner();
    assert!(listed.conversations.is_empty());

    let id = conversation(&mut alice, "ok", &[]).await.id;
    let output_only = pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation { id: id.clone(), ..Default::default() }),
        update_mask: mask(&["last_seq"]),
        request_id: String::new(),
    };
    assert_eq!(violations(&alice.update_conversation(output_only).await.unwrap_err()), ["update_mask"]);
    let empty_mask = pb::UpdateConversationRequest {
        conversation: Some(pb::Conversation { id: id.clone(), title: "x".into(), ..Default::default() }),
        update_mask: None,
        request_id: String::new(),
    };
    assert_eq!(violations(&alice.update_conversation(empty_mask).await.unwrap_err()), ["update_mask"]);
    let malformed =
        alice.get_conversation(pb::GetConversationRequest { conversation_id: "c-1".into() }).await;
    assert_eq!(violations(&malformed.unwrap_err()), ["conversation_id"]);
    chat.stop().await;
}

#[tokio::test]
async fn deleted_conversations_are_purged_with_their_messages_after_the_retention() {
    let database = codingagent_testkit::TestDatabase::create().await.unwrap();
    let mut config = crate::harness::config(&database).await;
    config.retention_days = 0;
    config.purge_interval_secs = 1;
    let chat = Chat::start_with(config, Some(database)).await;
    let mut alice = chat.user("alice").await;
    let id = conversation(&mut alice, "short-lived", &[]).await.id;
    post(&mut alice, &id, "gone soon").await;
    alice
        .delete_conversation(pb::DeleteConversationRequest {
            conversation_id: id.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let pool = chat.pool().await;
    let remaining = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT (SELECT count(*) FROM chat.conversations WHERE id = $1::uuid) + (SELECT count(*) FROM chat.messages WHERE conversation_id = $1::uuid)",
        )
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let mut left = remaining().await;
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = remaining().await;
    }
    assert_eq!(left, 0, "the purge job removed the conversation and its messages");
    pool.close().await;
    chat.stop().await;
}
