//! Redis is a cache and a fan-out, not a store: with it stopped, posting and reading work.

use crate::harness::{Chat, conversation, post};
use codingagent_proto::codingagent::chat::v1 as pb;

#[tokio::test]
#[ignore = "disruptive: stops the shared Redis; ./dev test runs it serially"]
async fn posts_and_reads_work_while_redis_is_down() {
    let chat = Chat::start().await;
    let mut alice = chat.user("alice").await;
    let id = conversation(&mut alice, "outage", &[]).await.id;
    post(&mut alice, &id, "before").await;
    let latest = pb::ListMessagesRequest { conversation_id: id.clone(), ..Default::default() };
    alice.list_messages(latest.clone()).await.unwrap(); // fills the cache

    let stopped = tokio::task::spawn_blocking(|| codingagent_testkit::dev(&["stop", "redis"])).await.unwrap();
    let restart = || tokio::task::spawn_blocking(|| codingagent_testkit::dev(&["start", "redis"]));
    if let Err(error) = stopped {
        restart().await.unwrap().unwrap();
        panic!("could not stop redis: {error}");
    }
    let during = async {
        let mut stream = alice
            .stream_conversation(pb::StreamConversationRequest { conversation_id: id.clone(), after_seq: 0 })
            .await?
            .into_inner();
        let posted = alice
            .post_message(pb::PostMessageRequest {
                conversation_id: id.clone(),
                text: "sent in the outage".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let texts: Vec<String> = alice
            .list_messages(latest.clone())
            .await?
            .into_inner()
            .messages
            .into_iter()
            .map(|m| m.text)
            .collect();
        let search = alice
            .search_messages(pb::SearchMessagesRequest { query: "outage".into(), ..Default::default() })
            .await?;
        // The stream still sees both messages: the log replays, the heartbeat catches up.
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let event = stream.message().await?.unwrap().event.unwrap();
            if let Some(pb::conversation_event::Event::MessagePosted(m)) = event.event {
                seen.push(m.text);
            }
        }
        Ok::<_, tonic::Status>((posted, texts, search.into_inner().results.len(), seen))
    };
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), during).await;
    restart().await.unwrap().unwrap();
    let (posted, texts, found, seen) = outcome.expect("no call hung").expect("every call succeeded");
    assert_eq!(posted.message.unwrap().seq, 2);
    assert_eq!(texts, ["before", "sent in the outage"], "the read came from PostgreSQL, not a stale cache");
    assert_eq!(found, 1);
    assert_eq!(seen, ["before", "sent in the outage"]);

    // Back up: the cache entry from before the outage is not served.
    let after = post(&mut alice, &id, "after").await;
    let texts: Vec<String> = alice
        .list_messages(latest)
        .await
        .unwrap()
        .into_inner()
        .messages
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["before", "sent in the outage", "after"]);
    assert_eq!(after.seq, 3);
    chat.stop().await;
}
