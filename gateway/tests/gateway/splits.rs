//! Traffic splits through the running gateway, and the cut-over switch flipped by editing
//! the configuration file while it serves.

use crate::harness::{Gateway, Jwks, Recorder, bearer, token, toml};
use codingagent_proto::codingagent::chat::v1 as chat;
use codingagent_proto::codingagent::chat::v1::chat_service_client::ChatServiceClient;
use std::collections::HashMap;
use tonic::Code;

async fn backend_of(client: &mut ChatServiceClient<tonic::transport::Channel>, user: &str) -> String {
    let response = client
        .list_conversations(bearer(chat::ListConversationsRequest::default(), &token(user)))
        .await
        .unwrap();
    response.metadata().get("x-codingagent-backend").unwrap().to_str().unwrap().to_owned()
}

#[tokio::test]
async fn ten_percent_of_users_go_to_the_alternate_each_always_to_the_same_one_and_the_switch_flips_live() {
    let (new, old) = (Recorder::start(Code::Ok).await, Recorder::start(Code::Ok).await);
    let jwks = Jwks::start(&["ed-a"]).await;
    let backends = [("chat", vec![new.url()]), ("chat-legacy", vec![old.url()])];
    let split = |percent: u32, use_legacy: bool| {
        format!(
            r#""codingagent.chat.v1" = {{ backend = "chat", alternate = "chat-legacy", alternate_percent = {percent}, use_legacy = {use_legacy} }}"#
        )
    };
    // Rate limits would refuse 10,000 calls from one address within seconds.
    let extra = "[rate_limits]\nenabled = false\n";
    let gateway = Gateway::start(&toml(&jwks.url(), &backends, &split(10, false), extra), jwks).await;
    let mut client = ChatServiceClient::new(gateway.channel().await);

    let mut first: HashMap<String, String> = HashMap::new();
    for i in 0..10_000 {
        let user = format!("user-{i}");
        let backend = backend_of(&mut client, &user).await;
        first.insert(user, backend);
    }
    let alternate = first.values().filter(|b| *b == "chat-legacy").count();
    assert!((800..=1200).contains(&alternate), "{alternate} of 10000 users went to the alternate");
    for i in (0..10_000).step_by(50) {
        let user = format!("user-{i}");
        assert_eq!(backend_of(&mut client, &user).await, first[&user], "{user} changed sides");
    }

    gateway.rewrite(&toml(&gateway.jwks.url(), &backends, &split(10, true), extra)).await;
    let mut flipped = false;
    for _ in 0..50 {
        if backend_of(&mut client, "user-1").await == "chat-legacy"
            && backend_of(&mut client, "user-2").await == "chat-legacy"
        {
            flipped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(flipped, "use_legacy sends everyone to the alternate without a restart");
    let everyone = (0..200).filter(|_| true).count();
    let mut legacy = 0;
    for i in 0..everyone {
        if backend_of(&mut client, &format!("user-{i}")).await == "chat-legacy" {
            legacy += 1;
        }
    }
    assert_eq!(legacy, everyone);

    // A broken edit is refused whole and routing stays as it was.
    gateway
        .rewrite(&toml(
            &gateway.jwks.url(),
            &backends,
            r#""codingagent.chat.v1" = { backend = "nope" }"#,
            extra,
        ))
        .await;
    assert_eq!(backend_of(&mut client, "user-3").await, "chat-legacy");
}
