//! A backend that dies and returns, a replica that fails every call, and which calls the
//! gateway may repeat.

use crate::harness::{Chat, Gateway, Jwks, Recorder, bearer, reason, token, toml};
use codingagent_proto::codingagent::chat::v1 as chat;
use codingagent_proto::codingagent::chat::v1::chat_service_client::ChatServiceClient;
use codingagent_proto::codingagent::orchestration::v1 as orchestration;
use codingagent_proto::codingagent::orchestration::v1::orchestration_service_client::OrchestrationServiceClient;
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn a_dead_backend_fails_fast_and_recovers_when_it_returns() {
    let mut chat = Chat::start().await;
    let jwks = Jwks::start(&["ed-a"]).await;
    let text = toml(
        &jwks.url(),
        &[("chat", vec![chat.url()])],
        r#""codingagent.chat.v1" = { backend = "chat" }"#,
        "",
    );
    let gateway = Gateway::start(&text, jwks).await;
    let mut client = ChatServiceClient::new(gateway.channel().await);
    let list = || bearer(chat::ListConversationsRequest::default(), &token("alice"));
    client.list_conversations(list()).await.unwrap();

    chat.stop().await;
    // The health watch and the breaker notice; from then on the gateway answers without
    // trying the dead endpoint.
    let mut reasons = Vec::new();
    for _ in 0..50 {
        let status = client.list_conversations(list()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        reasons.push(reason(&status));
        if reasons.last().is_some_and(|r| r == "BACKEND_UNAVAILABLE") && reasons.len() > 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reasons.last().map(String::as_str), Some("BACKEND_UNAVAILABLE"), "{reasons:?}");
    let metrics = codingagent_testkit::metrics(gateway.addr).await;
    assert!(
        metrics.lines().any(|l| l.starts_with("codingagent_gateway_breaker_state") && !l.ends_with(" 0")),
        "the endpoint is reported open or not serving:\n{metrics}"
    );

    chat.restart().await;
    let mut recovered = false;
    for _ in 0..150 {
        match client.list_conversations(list()).await {
            Ok(_) => {
                recovered = true;
                break;
            }
            Err(status) => eprintln!("after restart: {:?} {}", status.code(), status.message()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "calls succeed again once the backend is back");
}

#[tokio::test]
async fn only_methods_marked_idempotent_are_retried() {
    let sick = Recorder::start(Code::Unavailable).await;
    let healthy = Recorder::start(Code::Ok).await;
    let jwks = Jwks::start(&["ed-a"]).await;
    let services = r#"
"codingagent.chat.v1" = { backend = "pool" }
"codingagent.orchestration.v1" = { backend = "pool" }
"#;
    // A high breaker threshold keeps the sick replica in rotation for the whole test.
    let text = toml(&jwks.url(), &[("pool", vec![sick.url(), healthy.url()])], services, "")
        .replace("breaker_failures = 2", "breaker_failures = 1000");
    let gateway = Gateway::start(&text, jwks).await;

    let mut tasks = OrchestrationServiceClient::new(gateway.channel().await);
    for _ in 0..20 {
        // GetTask is NO_SIDE_EFFECTS in the contract: a failed attempt is tried elsewhere.
        tasks
            .get_task(bearer(orchestration::GetTaskRequest { task_id: "t".into() }, &token("alice")))
            .await
            .expect("retried on the healthy replica");
    }
    let get = "/codingagent.orchestration.v1.OrchestrationService/GetTask";
    assert!(!sick.calls(get).is_empty(), "some attempts hit the sick replica first");
    assert_eq!(healthy.calls(get).len(), 20);

    let mut client = ChatServiceClient::new(gateway.channel().await);
    let mut failed = 0;
    for i in 0..20 {
        let request = chat::PostMessageRequest {
            conversation_id: "c".into(),
            text: format!("m{i}"),
            ..Default::default()
        };
        if let Err(status) = client.post_message(bearer(request, &token("alice"))).await {
            assert_eq!(status.code(), Code::Unavailable);
            failed += 1;
        }
    }
    let post = "/codingagent.chat.v1.ChatService/PostMessage";
    assert!(failed > 0, "posting is never retried, so the sick replica's answers reach the client");
    assert_eq!(sick.calls(post).len(), failed, "each failed post was attempted once");
    assert_eq!(healthy.calls(post).len(), 20 - failed, "and no post was attempted twice");
}
