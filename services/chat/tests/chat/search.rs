//! Search: ranked, highlighted, filtered, paged — and never another user's messages.

use crate::harness::{Chat, conversation, post, violations};
use codingagent_proto::codingagent::chat::v1 as pb;
use tonic::Code;

fn query(text: &str) -> pb::SearchMessagesRequest {
    pb::SearchMessagesRequest { query: text.into(), ..Default::default() }
}

fn texts(response: &pb::SearchMessagesResponse) -> Vec<String> {
    response.results.iter().map(|r| r.message.as_ref().unwrap().text.clone()).collect()
}

#[tokio::test]
async fn search_ranks_highlights_and_stays_within_what_the_caller_sees() {
    let chat = Chat::start().await;
    let (mut alice, mut bob) = (chat.user("alice").await, chat.user("bob").await);
    let login = conversation(&mut alice, "Login", &[]).await.id;
    let billing = conversation(&mut alice, "Billing", &[]).await.id;
    post(&mut alice, &login, "The login test is flaky on CI; it times out waiting for the session").await;
    post(&mut alice, &login, "Flaky tests again: the login test failed twice, flaky flaky").await;
    post(&mut alice, &billing, "Invoices are rounded wrongly for customers in Japan").await;
    let deleted = post(&mut alice, &billing, "flaky billing export").await;
    alice
        .delete_message(pb::DeleteMessageRequest { message_id: deleted.id, request_id: String::new() })
        .await
        .unwrap();
    let bobs = conversation(&mut bob, "Bob's", &[]).await.id;
    post(&mut bob, &bobs, "my flaky login test is private").await;

    let found = alice.search_messages(query("flaky login")).await.unwrap().into_inner();
    assert_eq!(
        texts(&found),
        [
            "Flaky tests again: the login test failed twice, flaky flaky",
            "The login test is flaky on CI; it times out waiting for the session",
        ],
        "best rank first; bob's message and the deleted one never match"
    );
    let first = &found.results[0];
    assert_eq!(first.conversation_title, "Login");
    assert!(first.rank >= found.results[1].rank);
    let highlighted: Vec<&str> =
        first.snippet.iter().filter(|s| s.highlighted).map(|s| s.text.as_str()).collect();
    assert!(highlighted.iter().any(|w| w.eq_ignore_ascii_case("flaky")), "{:?}", first.snippet);
    assert!(highlighted.iter().any(|w| w.eq_ignore_ascii_case("login")), "{:?}", first.snippet);

    // Web-search syntax: phrases and exclusions.
    let phrase = alice.search_messages(query("\"login test\" -session")).await.unwrap().into_inner();
    assert_eq!(texts(&phrase), ["Flaky tests again: the login test failed twice, flaky flaky"]);
    // Filters: one conversation, and a time window that excludes everything.
    let scoped = pb::SearchMessagesRequest { conversation_id: billing.clone(), ..query("invoices") };
    assert_eq!(alice.search_messages(scoped).await.unwrap().into_inner().results.len(), 1);
    let future = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() + 3_600, nanos: 0 };
    let later = pb::SearchMessagesRequest { start_time: Some(future), ..query("flaky") };
    assert!(alice.search_messages(later).await.unwrap().into_inner().results.is_empty());
    // Paging walks the same ranking.
    let first_page =
        alice.search_messages(pb::SearchMessagesRequest { page_size: 1, ..query("flaky") }).await.unwrap();
    let first_page = first_page.into_inner();
    let second = pb::SearchMessagesRequest {
        page_size: 1,
        page_token: first_page.next_page_token.clone(),
        ..query("flaky")
    };
    let second = alice.search_messages(second).await.unwrap().into_inner();
    assert_eq!([texts(&first_page), texts(&second)].concat(), texts(&found));
    assert!(second.next_page_token.is_empty());

    let private =
        bob.search_messages(pb::SearchMessagesRequest { conversation_id: login, ..query("flaky") }).await;
    assert_eq!(private.unwrap_err().code(), Code::NotFound);
    let bobs_results = bob.search_messages(query("flaky")).await.unwrap().into_inner();
    assert_eq!(texts(&bobs_results), ["my flaky login test is private"]);
    chat.stop().await;
}

#[tokio::test]
async fn unsearchable_queries_and_bad_filters_are_named() {
    let chat = Chat::start().await;
    let mut alice = chat.user("alice").await;
    assert_eq!(violations(&alice.search_messages(query("the and of")).await.unwrap_err()), ["query"]);
    assert_eq!(violations(&alice.search_messages(query("")).await.unwrap_err()), ["query"]);
    let now = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp(), nanos: 0 };
    let backwards = pb::SearchMessagesRequest {
        start_time: Some(now),
        end_time: Some(prost_types::Timestamp { seconds: now.seconds - 60, nanos: 0 }),
        conversation_id: "x".into(),
        ..query("flaky")
    };
    assert_eq!(
        violations(&alice.search_messages(backwards).await.unwrap_err()),
        ["conversation_id", "end_time"]
    );
    let other_search = pb::SearchMessagesRequest {
        page_token: crate::search::token_of(&mut alice).await,
        ..query("different")
    };
    assert_eq!(violations(&alice.search_messages(other_search).await.unwrap_err()), ["page_token"]);
    chat.stop().await;
}

/// A page token issued for the query "flaky".
pub(crate) async fn token_of(alice: &mut crate::harness::Client) -> String {
    let id = conversation(alice, "tokens", &[]).await.id;
    post(alice, &id, "flaky one").await;
    post(alice, &id, "flaky two").await;
    let page =
        alice.search_messages(pb::SearchMessagesRequest { page_size: 1, ..query("flaky") }).await.unwrap();
    page.into_inner().next_page_token
}
