//! Plain HTTP on the gateway's port: the dashboard's files, probes, metrics, development
//! sign-in, pass-through routes, CORS, and floods of paths nobody serves.

use crate::harness::{Gateway, Jwks, Recorder, key_path, token, toml};
use codingagent_kernel::config::IdentityConfig;
use codingagent_kernel::identity::{IDENTITY_HEADER, TokenVerifier};
use tonic::Code;

async fn gateway(extra: &str) -> (Recorder, Gateway) {
    let recorder = Recorder::start(Code::Ok).await;
    let jwks = Jwks::start(&["ed-a"]).await;
    let text = toml(
        &jwks.url(),
        &[("chat", vec![recorder.url()])],
        r#""codingagent.chat.v1" = { backend = "chat" }"#,
        extra,
    );
    (recorder, Gateway::start(&text, jwks).await)
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn the_dashboard_is_served_with_caching_headers_and_client_routes() {
    let dir = std::env::temp_dir().join(codingagent_testkit::unique_name("web"));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<html>dashboard</html>").unwrap();
    std::fs::write(dir.join("main-4F3KQ2ZD.js"), "console.log(1)").unwrap();
    // `static_dir` is a top-level key, so it goes before any table.
    let jwks = Jwks::start(&["ed-a"]).await;
    let text = format!(
        "static_dir = \"{}\"\n{}",
        dir.display(),
        toml(&jwks.url(), &[("chat", vec!["http://127.0.0.1:9".into()])], "", "")
    );
    let gateway = Gateway::start(&text, jwks).await;
    let get = |path: &str| client().get(format!("{}{path}", gateway.url())).send();

    let index = get("/").await.unwrap();
    assert_eq!(index.headers()["cache-control"], "no-cache");
    assert!(index.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let etag = index.headers()["etag"].clone();
    assert_eq!(index.text().await.unwrap(), "<html>dashboard</html>");
    let asset = get("/main-4F3KQ2ZD.js").await.unwrap();
    assert_eq!(asset.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert!(asset.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let route = get("/tasks/42").await.unwrap();
    assert_eq!(route.status(), 200);
    assert_eq!(route.text().await.unwrap(), "<html>dashboard</html>", "a client-side route gets index.html");
    assert_eq!(get("/missing.js").await.unwrap().status(), 404);
    for raw in ["/%2e%2e/%2e%2e/etc/passwd", "/../../etc/passwd", "/a/..%2f..%2fetc/passwd"] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        let request = format!("GET {raw} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{raw}: {answer}");
    }
    let dotted = get("/../../etc/passwd").await.unwrap().text().await.unwrap();
    assert_eq!(dotted, "<html>dashboard</html>", "the client resolves the dots; nothing outside is read");
    let cached =
        client().get(format!("{}/", gateway.url())).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(cached.status(), 304);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn probes_metrics_and_unknown_paths() {
    let (_recorder, gateway) = gateway("").await;
    let get = |path: String| client().get(format!("{}{path}", gateway.url())).send();
    assert_eq!(get("/healthz".into()).await.unwrap().status(), 200);
    let ready = get("/readyz".into()).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.text().await.unwrap().contains("chat up"));
    let mut grpc = tonic::client::Grpc::new(gateway.channel().await);
    let mut before = String::new();
    for i in 0..500 {
        if i == 1 {
            // The first unknown call creates the `unknown` series; none after it may.
            before = get("/metrics".into()).await.unwrap().text().await.unwrap();
            for i in 0..2_000 {
                assert_eq!(get(format!("/nothing/{i}")).await.unwrap().status(), 404);
            }
        }
        grpc.ready().await.unwrap();
        let path: http::uri::PathAndQuery = format!("/made.up.v1.Service{i}/Call").parse().unwrap();
        let status = grpc
            .unary(tonic::Request::new(()), path, tonic_prost::ProstCodec::<(), ()>::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
    }
    let after = get("/metrics".into()).await.unwrap().text().await.unwrap();
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(
        series(&after),
        series(&before),
        "made-up paths grew the registry: {} -> {}",
        series(&before),
        series(&after)
    );
    assert!(after.contains("route=\"unknown\""));
}

#[tokio::test]
async fn development_sign_in_issues_tokens_the_gateway_accepts() {
    let extra = format!(
        "[auth.dev_sign_in]\nenabled = true\nprivate_key_file = \"{}\"\npublic_key_file = \"{}\"\n",
        codingagent_testkit::repo_path("deploy/config/dev/gateway-dev-signing.pem").display(),
        codingagent_testkit::repo_path("deploy/config/dev/gateway-dev-signing.pub.pem").display(),
    );
    let (recorder, gateway) = gateway(&extra).await;
    let url = format!("{}/auth/dev/sign-in", gateway.url());
    let signed: serde_json::Value =
        client().post(&url).body(r#"{"user": "dana"}"#).send().await.unwrap().json().await.unwrap();
    let token = signed["token"].as_str().unwrap();
    let mut client_ = codingagent_proto::codingagent::chat::v1::chat_service_client::ChatServiceClient::new(
        gateway.channel().await,
    );
    client_.list_conversations(crate::harness::bearer(Default::default(), token)).await.unwrap();
    let seen = recorder.calls("/codingagent.chat.v1.ChatService/ListConversations");
    let caller = TokenVerifier::new(&IdentityConfig::default())
        .verify(seen[0].headers[IDENTITY_HEADER].to_str().unwrap())
        .unwrap();
    assert_eq!(caller.subject, "dana");
    for bad in [r#"{"user": ""}"#, r#"{"user": "a b"}"#, "not json", r#"{"user": "x", "admin": true}"#] {
        assert_eq!(client().post(&url).body(bad).send().await.unwrap().status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn pass_through_routes_carry_the_users_identity_and_nothing_forged() {
    let extra = "[[http_routes]]\nprefix = \"/v1/conversations/\"\nbackend = \"chat\"\n\n[[http_routes]]\nprefix = \"/webhooks/\"\nbackend = \"chat\"\npublic = true\n";
    let (recorder, gateway) = gateway(extra).await;
    let upload = format!("{}/v1/conversations/c1/attachments", gateway.url());
    let refused = client().post(&upload).body("file").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let response = client()
        .post(&upload)
        .header("authorization", format!("Bearer {}", token("erin")))
        .header(IDENTITY_HEADER, "forged")
        .body("file")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = recorder.calls("/v1/conversations/c1/attachments");
    let identity = seen[0].headers[IDENTITY_HEADER].to_str().unwrap();
    assert_eq!(TokenVerifier::new(&IdentityConfig::default()).verify(identity).unwrap().subject, "erin");
    let hook = client()
        .post(format!("{}/webhooks/github", gateway.url()))
        .header(IDENTITY_HEADER, "forged")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 200, "webhooks need no token");
    assert!(recorder.calls("/webhooks/github")[0].headers.get(IDENTITY_HEADER).is_none());
}

#[tokio::test]
async fn cors_answers_configured_origins_only() {
    let (_recorder, gateway) = gateway("[cors]\nallowed_origins = [\"https://app.example.com\"]\n").await;
    let preflight = |origin: &str| {
        client()
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/codingagent.chat.v1.ChatService/ListConversations", gateway.url()),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web,authorization")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let _ = key_path("jwks.json");
}
