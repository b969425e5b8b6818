//! Durable changes reach Kafka through the outbox, as CloudEvents.

use crate::harness::{Chat, conversation, post};
use codingagent_kernel::kafka::topics;
use codingagent_proto::codingagent::events::v1::MessagePosted;
use prost::Message;
use std::time::Duration;

#[tokio::test]
async fn a_posted_message_is_published_as_message_posted() {
    let chat = Chat::start().await;
    let mut alice = chat.user("alice").await;
    let id = conversation(&mut alice, "events", &[]).await.id;
    let message = post(&mut alice, &id, "publish me").await;
    let wanted = message.id.clone();
    let record = codingagent_testkit::find_record(
        &codingagent_testkit::topic(topics::CHAT),
        move |r| {
            r.headers.get("ce_type").map(String::as_str) == Some("codingagent.events.v1.MessagePosted")
                && MessagePosted::decode(r.payload.as_slice())
                    .is_ok_and(|e| e.message.is_some_and(|m| m.id == wanted))
        },
        Duration::from_secs(20),
    )
    .await
    .unwrap()
    .expect("MessagePosted within 20 s");
    assert_eq!(record.key.as_deref(), Some(id.as_str()), "keyed by conversation, so its events stay ordered");
    for header in ["ce_id", "ce_source", "ce_specversion", "ce_time"] {
        assert!(record.headers.contains_key(header), "{header} in {:?}", record.headers);
    }
    let event = MessagePosted::decode(record.payload.as_slice()).unwrap();
    assert_eq!((event.conversation_owner.as_str(), event.actor.unwrap().id.as_str()), ("alice", "alice"));
    chat.stop().await;
}
