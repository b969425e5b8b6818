//! grpcurl through the gateway, with reflection served by the gateway itself: `list`,
//! `describe`, a call and a stream, as the README shows them.

use crate::harness::{Chat, Gateway, Jwks, token, toml};

#[tokio::test]
async fn grpcurl_lists_describes_calls_and_streams_through_reflection() {
    let chat = Chat::start().await;
    let jwks = Jwks::start(&["ed-a"]).await;
    let text = toml(
        &jwks.url(),
        &[("chat", vec![chat.url()])],
        r#""codingagent.chat.v1" = { backend = "chat" }"#,
        "",
    );
    let gateway = Gateway::start(&text, jwks).await;
    let script = codingagent_testkit::repo_path("gateway/scripts/grpcurl-demo.sh");
    let (addr, token) = (gateway.addr.to_string(), token("alice"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script).args([&addr, &token]).output()
    })
    .await
    .unwrap()
    .expect("grpcurl is installed by ./dev tools");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for service in [
        "codingagent.chat.v1.ChatService",
        "codingagent.orchestration.v1.OrchestrationService",
        "codingagent.llm.v1.LlmService",
        "codingagent.classifier.v1.ClassifierService",
        "grpc.health.v1.Health",
    ] {
        assert!(stdout.contains(service), "list shows {service}: {stdout}");
    }
    assert!(stdout.contains("rpc CreateConversation"), "{stdout}");
    assert!(stdout.contains("created conversation "), "{stdout}");
    assert!(stdout.contains("streamed \"text\": \"The login test times out on CI\""), "{stdout}");
}
