//! Native gRPC through the gateway to the real chat service: identity end to end, object
//! authorization between users, server streaming, unknown methods, forged identity headers,
//! deadlines and trace context reaching the backend.

use crate::harness::{Chat, Gateway, Jwks, Recorder, bearer, reason, token, toml};
use codingagent_kernel::config::IdentityConfig;
use codingagent_kernel::identity::{IDENTITY_HEADER, TokenVerifier};
use codingagent_proto::codingagent::chat::v1 as chat;
use codingagent_proto::codingagent::chat::v1::chat_service_client::ChatServiceClient;
use std::time::Duration;
use tonic::Code;

async fn chat_gateway(chat: &Chat) -> Gateway {
    let jwks = Jwks::start(&["ed-a", "rsa-a", "ec-a"]).await;
    let text = toml(
        &jwks.url(),
        &[("chat", vec![chat.url()])],
        r#""codingagent.chat.v1" = { backend = "chat" }"#,
        "",
    );
    Gateway::start(&text, jwks).await
}

#[tokio::test]
async fn calls_reach_chat_as_the_tokens_user_and_other_users_see_nothing() {
    let chat = Chat::start().await;
    let gateway = chat_gateway(&chat).await;
    let mut client = ChatServiceClient::new(gateway.channel().await);
    let created = client
        .create_conversation(bearer(
            chat::CreateConversationRequest { title: "through the edge".into(), ..Default::default() },
            &token("alice"),
        ))
        .await
        .unwrap()
        .into_inner();
    let conversation = created.conversation.unwrap();
    let got = client
        .get_conversation(bearer(
            chat::GetConversationRequest { conversation_id: conversation.id.clone() },
            &token("alice"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.conversation.unwrap().title, "through the edge");

    let refused = client
        .get_conversation(bearer(
            chat::GetConversationRequest { conversation_id: conversation.id.clone() },
            &token("bob"),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "bob cannot see alice's conversation: {refused:?}");

    let anonymous = client
        .get_conversation(chat::GetConversationRequest { conversation_id: conversation.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn server_streams_flow_through_unbuffered() {
    let chat = Chat::start().await;
    let gateway = chat_gateway(&chat).await;
    let mut client = ChatServiceClient::new(gateway.channel().await);
    let alice = token("alice");
    let conversation = client
        .create_conversation(bearer(
            chat::CreateConversationRequest { title: "stream".into(), ..Default::default() },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    let mut stream = client
        .stream_conversation(bearer(
            chat::StreamConversationRequest {
                conversation_id: conversation.id.clone(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    // The stream is open end to end before anything is posted: the post arrives live.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .post_message(bearer(
            chat::PostMessageRequest {
                conversation_id: conversation.id.clone(),
                text: "live".into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = stream.message().await.unwrap() {
            if format!("{event:?}").contains("live") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(found, "the posted message came through the stream");
}

#[tokio::test]
async fn unknown_methods_are_unimplemented_before_authentication() {
    let recorder = Recorder::start(Code::Ok).await;
    let jwks = Jwks::start(&["ed-a"]).await;
    let text = toml(
        &jwks.url(),
        &[("chat", vec![recorder.url()])],
        r#""codingagent.chat.v1" = { backend = "chat" }"#,
        "",
    );
    let gateway = Gateway::start(&text, jwks).await;
    let mut grpc = tonic::client::Grpc::new(gateway.channel().await);
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    for path in ["/codingagent.chat.v1.ChatService/Nope", "/made.up.Service/Call", "/x"] {
        grpc.ready().await.unwrap();
        let status = grpc
            .unary(tonic::Request::new(()), http::uri::PathAndQuery::from_static(path), codec.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{path}");
    }
    // A contract nobody serves in this deployment.
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(
            bearer((), &token("alice")),
            http::uri::PathAndQuery::from_static("/codingagent.github.v1.GitHubService/ListRepositories"),
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::Unimplemented, "NOT_SERVED"));
    assert!(recorder.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn forged_identity_is_replaced_and_deadline_and_trace_reach_the_backend() {
    let recorder = Recorder::start(Code::Ok).await;
    let jwks = Jwks::start(&["ed-a"]).await;
    let text = toml(
        &jwks.url(),
        &[("chat", vec![recorder.url()])],
        r#""codingagent.chat.v1" = { backend = "chat" }"#,
        "",
    );
    let gateway = Gateway::start(&text, jwks).await;
    let mut client = ChatServiceClient::new(gateway.channel().await);

    let forged = codingagent_kernel::identity::TokenMinter::new(&IdentityConfig::default())
        .mint(&codingagent_kernel::identity::Caller::user("mallory").with_roles(["operator"]))
        .unwrap();
    let mut request = bearer(chat::ListConversationsRequest::default(), &token("alice"));
    request.metadata_mut().insert(IDENTITY_HEADER, forged.parse().unwrap());
    request.metadata_mut().insert("x-codingagent-anything", "forged".parse().unwrap());
    request
        .metadata_mut()
        .insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
    request.set_timeout(Duration::from_millis(1500));
    client.list_conversations(request).await.unwrap();

    let seen = recorder.calls("/codingagent.chat.v1.ChatService/ListConversations");
    assert_eq!(seen.len(), 1);
    let headers = &seen[0].headers;
    let identity = headers.get_all(IDENTITY_HEADER).iter().collect::<Vec<_>>();
    assert_eq!(identity.len(), 1, "exactly one identity: the gateway's");
    let caller =
        TokenVerifier::new(&IdentityConfig::default()).verify(identity[0].to_str().unwrap()).unwrap();
    assert_eq!(caller.subject, "alice");
    assert!(!caller.is_operator(), "the forged operator role did not travel");
    assert!(headers.get("x-codingagent-anything").is_none());
    assert!(headers.get("authorization").is_none(), "the external token stays at the edge");

    let timeout = codingagent_gateway::deadline::parse(headers["grpc-timeout"].to_str().unwrap()).unwrap();
    assert!(timeout <= Duration::from_millis(1500) && timeout > Duration::from_millis(1000), "{timeout:?}");

    let traceparent = headers["traceparent"].to_str().unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "the client's trace continues");
    assert_ne!(parts[2], "00f067aa0ba902b7", "the backend's parent is the gateway's span");

    // Without a deadline, a unary call gets the gateway's default.
    client
        .list_conversations(bearer(chat::ListConversationsRequest::default(), &token("alice")))
        .await
        .unwrap();
    let seen = recorder.calls("/codingagent.chat.v1.ChatService/ListConversations");
    let timeout =
        codingagent_gateway::deadline::parse(seen[1].headers["grpc-timeout"].to_str().unwrap()).unwrap();
    assert!(timeout <= Duration::from_secs(30) && timeout > Duration::from_secs(29));
}
