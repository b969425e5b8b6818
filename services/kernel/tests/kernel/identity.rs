//! Identity through the real server: only valid internal tokens get through.

use crate::harness::{TestServer, server_config};
use codingagent_kernel::config::{IdentityConfig, Secret};
use codingagent_kernel::identity::{Caller, OnBehalfOf, OutboundIdentity, TokenMinter};
use codingagent_testkit::pb::WhoAmIRequest;
use codingagent_testkit::pb::probe_service_client::ProbeServiceClient;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::Code;

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn valid_tokens_identify_the_caller() {
    let server = TestServer::start(server_config(), vec![]).await;
    let me = server.client_as("alice").await.who_am_i(WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!((me.subject.as_str(), me.kind.as_str(), me.on_behalf_of.as_str()), ("alice", "User", ""));

    // A service calling on a user's behalf, the way services call each other.
    let outbound = OutboundIdentity::new(TokenMinter::new(&server.identity), "orchestration");
    let mut client = ProbeServiceClient::with_interceptor(server.channel().await, outbound);
    let mut request = tonic::Request::new(WhoAmIRequest {});
    request.extensions_mut().insert(OnBehalfOf::user("bob"));
    let me = client.who_am_i(request).await.unwrap().into_inner();
    assert_eq!(
        (me.subject.as_str(), me.kind.as_str(), me.on_behalf_of.as_str()),
        ("orchestration", "Service", "bob")
    );
}

#[tokio::test]
async fn missing_malformed_expired_and_foreign_tokens_are_unauthenticated() {
    let server = TestServer::start(server_config(), vec![]).await;
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({
            "iss": "codingagent", "aud": "codingagent-internal", "sub": "alice", "kind": "user",
            "iat": unix_now() - 600, "nbf": unix_now() - 600, "exp": unix_now() - 300, "jti": "x"
        }),
        &EncodingKey::from_secret(server.identity.signing_key.expose().as_bytes()),
    )
    .unwrap();
    let foreign = TokenMinter::new(&IdentityConfig {
        signing_key: Secret::new("some-other-deployment-key-0123456789abcdef"),
        ..IdentityConfig::default()
    })
    .mint(&Caller::user("alice"))
    .unwrap();

    for (case, token) in [
        ("missing", None),
        ("garbage", Some("not-a-jwt".to_owned())),
        ("empty", Some(String::new())),
        ("expired", Some(expired)),
        ("foreign key", Some(foreign)),
    ] {
        let status = server.client(token).await.who_am_i(WhoAmIRequest {}).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
    }
}

#[tokio::test]
async fn health_needs_no_token() {
    // Reflection without a token is covered by the grpcurl test.

    let server = TestServer::start(server_config(), vec![]).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
}
