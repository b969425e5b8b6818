//! The JWT suite: every token the gateway must refuse is refused with UNAUTHENTICATED and
//! nothing reaches the backend; keys rotate through the JWKS without a refusal.

use crate::harness::{AUDIENCE, Gateway, ISSUER, Jwks, Recorder, claims, key_path, now, sign, token, toml};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use codingagent_proto::codingagent::chat::v1 as chat;
use codingagent_proto::codingagent::chat::v1::chat_service_client::ChatServiceClient;
use serde_json::json;
use tonic::Code;

const PATH: &str = "/codingagent.chat.v1.ChatService/ListConversations";

async fn setup(keys: &[&str]) -> (Recorder, Gateway) {
    let recorder = Recorder::start(Code::Ok).await;
    let jwks = Jwks::start(keys).await;
    let text = toml(
        &jwks.url(),
        &[("chat", vec![recorder.url()])],
        r#""codingagent.chat.v1" = { backend = "chat" }"#,
        "",
    );
    (recorder, Gateway::start(&text, jwks).await)
}

/// Calls with `header: value` (`None` sends no identity at all).
async fn call(gateway: &Gateway, header: Option<(&str, String)>) -> Result<(), tonic::Status> {
    let mut client = ChatServiceClient::new(gateway.channel().await);
    let mut request = tonic::Request::new(chat::ListConversationsRequest::default());
    if let Some((name, value)) = header {
        request.metadata_mut().insert(
            tonic::metadata::MetadataKey::from_bytes(name.as_bytes()).unwrap(),
            value.parse().map_err(|_| tonic::Status::invalid_argument("unsendable"))?,
        );
    }
    client.list_conversations(request).await.map(drop)
}

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn every_bad_token_is_unauthenticated_and_nothing_reaches_the_backend() {
    let (recorder, gateway) = setup(&["ed-a", "rsa-a", "ec-a"]).await;
    let good = claims("alice");
    let without = |field: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(field);
        c
    };
    let (no_aud, no_iss, no_exp) = (without("aud"), without("iss"), without("exp"));
    let with = |field: &str, value: serde_json::Value| {
        let mut c = good.clone();
        c[field] = value;
        c
    };
    let rsa_public = std::fs::read(key_path("rsa-a.pub.pem")).unwrap();
    let hs256_with_public_key = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("rsa-a".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &good,
        &jsonwebtoken::EncodingKey::from_secret(&rsa_public),
    )
    .unwrap();
    let alg_none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT", "kid": "ed-a"})), b64(&good));
    let tampered = {
        let signed = sign("ed-a", &good);
        let parts: Vec<&str> = signed.split('.').collect();
        format!("{}.{}.{}", parts[0], b64(&with("sub", json!("admin"))), parts[2])
    };
    let another_keys_signature = {
        // Signed by ed-b but claiming to be ed-a.
        let pem = std::fs::read(key_path("ed-b.pem")).unwrap();
        let header = jsonwebtoken::Header {
            kid: Some("ed-a".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA)
        };
        jsonwebtoken::encode(&header, &good, &jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
    };
    let huge = sign("ed-a", &with("padding", json!("x".repeat(10_000))));
    let bearer = |t: String| Some(("authorization", format!("Bearer {t}")));
    let cases: Vec<(&str, Option<(&str, String)>)> = vec![
        ("no token", None),
        ("alg none", bearer(alg_none)),
        ("HS256 signed with the RSA public key", bearer(hs256_with_public_key)),
        ("expired", bearer(sign("ed-a", &with("exp", json!(now() - 120))))),
        ("not yet valid", bearer(sign("ed-a", &with("nbf", json!(now() + 120))))),
        ("missing aud", bearer(sign("ed-a", &no_aud))),
        ("wrong aud", bearer(sign("ed-a", &with("aud", json!("someone-else"))))),
        ("missing iss", bearer(sign("ed-a", &no_iss))),
        ("wrong iss", bearer(sign("ed-a", &with("iss", json!("https://evil.test"))))),
        ("missing exp", bearer(sign("ed-a", &no_exp))),
        ("unknown kid", bearer(sign("ed-b", &good))),
        ("tampered payload", bearer(tampered)),
        ("another key's signature", bearer(another_keys_signature)),
        ("a 10 kB token", bearer(huge)),
        ("non-base64 garbage", bearer("!!!.@@@.###".into())),
        ("garbage without dots", bearer("x".repeat(300))),
        ("no scheme", Some(("authorization", token("alice")))),
        ("basic scheme", Some(("authorization", format!("Basic {}", token("alice"))))),
        ("token in the wrong header", Some(("x-api-key", token("alice")))),
        ("an empty subject", bearer(sign("ed-a", &with("sub", json!(""))))),
    ];
    for (name, header) in cases {
        let status = call(&gateway, header).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
    }
    assert!(recorder.calls(PATH).is_empty(), "a refused call reached the backend");

    // And the good ones pass: every accepted algorithm, the static key, a bearer in any case.
    for key in ["ed-a", "rsa-a", "ec-a"] {
        call(&gateway, bearer(sign(key, &good))).await.unwrap_or_else(|e| panic!("{key}: {e:?}"));
    }
    let static_key = {
        let pem = std::fs::read(key_path("ed-b.pem")).unwrap();
        let header = jsonwebtoken::Header {
            kid: Some("static-ed".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA)
        };
        jsonwebtoken::encode(&header, &good, &jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
    };
    call(&gateway, bearer(static_key)).await.unwrap();
    call(&gateway, Some(("authorization", format!("bearer {}", token("alice"))))).await.unwrap();
    assert_eq!(recorder.calls(PATH).len(), 5);
    let _ = (ISSUER, AUDIENCE);
}

#[tokio::test]
async fn keys_rotate_through_the_jwks_and_unknown_kids_cannot_hammer_it() {
    let (_recorder, gateway) = setup(&["ed-a"]).await;
    let old = sign("ed-a", &claims("alice"));
    call(&gateway, Some(("authorization", format!("Bearer {old}")))).await.unwrap();
    let fetches = gateway.jwks.fetches().await;

    // The provider publishes the new key beside the old one: both verify, the new one after
    // one fetch prompted by its unknown kid.
    gateway.jwks.publish(&["ed-a", "rsa-a"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let new = sign("rsa-a", &claims("alice"));
    call(&gateway, Some(("authorization", format!("Bearer {new}")))).await.unwrap();
    let old_again = sign("ed-a", &claims("bob"));
    call(&gateway, Some(("authorization", format!("Bearer {old_again}")))).await.unwrap();

    // Tokens naming keys nobody published: refused, and they cause at most one more fetch
    // within the minimum refresh interval.
    let after_rotation = gateway.jwks.fetches().await;
    for i in 0..50 {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(format!("made-up-{i}"));
        let pem = std::fs::read(key_path("ed-a.pem")).unwrap();
        let forged = jsonwebtoken::encode(
            &header,
            &claims("eve"),
            &jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap(),
        )
        .unwrap();
        let status = call(&gateway, Some(("authorization", format!("Bearer {forged}")))).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let total = gateway.jwks.fetches().await;
    assert!(after_rotation >= fetches, "the reset server counts from zero");
    assert!(total - after_rotation <= 1, "{} fetches for 50 unknown kids", total - after_rotation);
}
