//! grpc-web through the gateway: the connect-web client in Node (unary and server
//! streaming against the real chat service), text mode over HTTP/1.1, a browser that goes
//! away mid-stream, and malformed or abusive input answered with clear statuses.

use crate::harness::{Chat, Gateway, Jwks, Recorder, token, toml};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

async fn gateway_for(url: String) -> Gateway {
    let jwks = Jwks::start(&["ed-a"]).await;
    let extra = "[limits]\nheader_read_timeout_ms = 1000\n";
    let text =
        toml(&jwks.url(), &[("chat", vec![url])], r#""codingagent.chat.v1" = { backend = "chat" }"#, extra);
    Gateway::start(&text, jwks).await
}

fn http1() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().unwrap()
}

#[tokio::test]
async fn the_connect_web_client_calls_and_streams_through_the_gateway() {
    let chat = Chat::start().await;
    let gateway = gateway_for(chat.url()).await;
    let descriptors = std::env::temp_dir().join(codingagent_testkit::unique_name("descriptors"));
    std::fs::write(&descriptors, codingagent_proto::FILE_DESCRIPTOR_SET).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/web-client.cjs");
    let mut command = std::process::Command::new("node");
    command
        .arg(&script)
        .arg(gateway.url())
        .arg(&descriptors)
        .arg(token("alice"))
        .env("NODE_PATH", codingagent_testkit::repo_path("web/node_modules"));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("node runs (./dev tools installs web/node_modules)");
    let _ = std::fs::remove_file(&descriptors);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let steps: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(steps[0]["step"], "unary");
    assert_eq!(steps[0]["title"], "from the browser");
    // connect's Code.Unauthenticated is 16, as in gRPC.
    assert_eq!(steps[1]["code"], 16, "the browser reads the status of a refused call");
    assert_eq!(steps[2]["received"], true, "the posted message arrived on the stream");
}

#[tokio::test]
async fn text_mode_over_http1_answers_with_trailers_in_the_body() {
    let recorder = Recorder::start(Code::Ok).await;
    let gateway = gateway_for(recorder.url()).await;
    let response = http1()
        .post(format!("{}/codingagent.chat.v1.ChatService/ListConversations", gateway.url()))
        .header("content-type", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {}", token("alice")))
        .body(STANDARD.encode(frame(&[])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc-web-text+proto");
    let body = response.bytes().await.unwrap();
    let decoded = codingagent_gateway::grpcweb::decode_text(&body).unwrap();
    assert_eq!(&decoded[..5], &[0, 0, 0, 0, 0], "the (empty) message");
    assert_eq!(decoded[5], 0x80, "then the trailers frame");
    assert!(String::from_utf8_lossy(&decoded[10..]).contains("grpc-status:0"));
}

/// The status a grpc-web answer carries (trailers-only responses put it in the headers).
fn grpc_status(response: &reqwest::Response) -> Option<i32> {
    response.headers().get("grpc-status")?.to_str().ok()?.parse().ok()
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_clear_statuses_and_reach_no_backend() {
    let recorder = Recorder::start(Code::Ok).await;
    let gateway = gateway_for(recorder.url()).await;
    let url = format!("{}/codingagent.chat.v1.ChatService/ListConversations", gateway.url());
    let alice = format!("Bearer {}", token("alice"));
    let post = |content_type: &str, body: Vec<u8>| {
        http1()
            .post(&url)
            .header("content-type", content_type)
            .header("authorization", &alice)
            .body(body)
            .send()
    };
    let cases: Vec<(&str, &str, Vec<u8>, i32)> = vec![
        (
            "truncated frame",
            "application/grpc-web+proto",
            vec![0, 0, 0, 0, 9, 1, 2],
            Code::InvalidArgument as i32,
        ),
        (
            "two messages",
            "application/grpc-web",
            [frame(b""), frame(b"")].concat(),
            Code::InvalidArgument as i32,
        ),
        ("no message", "application/grpc-web", Vec::new(), Code::InvalidArgument as i32),
        ("compressed flag", "application/grpc-web", vec![1, 0, 0, 0, 0], Code::InvalidArgument as i32),
        ("bad base64", "application/grpc-web-text", b"@@@@".to_vec(), Code::InvalidArgument as i32),
        (
            "a 5 MB message",
            "application/grpc-web",
            frame(&vec![0; 5 * 1024 * 1024]),
            Code::ResourceExhausted as i32,
        ),
        (
            "a frame claiming 4 GB",
            "application/grpc-web",
            vec![0, 0xff, 0xff, 0xff, 0xff],
            Code::ResourceExhausted as i32,
        ),
    ];
    for (name, content_type, body, code) in cases {
        let response = post(content_type, body).await.unwrap();
        assert_eq!(grpc_status(&response), Some(code), "{name}");
    }
    assert_eq!(post("application/grpc-web+json", frame(b"")).await.unwrap().status(), 415);
    let native = post("application/grpc", frame(b"")).await.unwrap();
    assert_eq!(native.status(), 505, "native gRPC over HTTP/1.1");
    let huge_header = http1()
        .post(&url)
        .header("content-type", "application/grpc-web")
        .header("x-padding", "x".repeat(40_000))
        .body(frame(b""))
        .send()
        .await
        .unwrap();
    assert_eq!(huge_header.status(), 431);
    assert!(recorder.seen.lock().unwrap().is_empty(), "nothing malformed reached the backend");
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let recorder = Recorder::start(Code::Ok).await;
    let gateway = gateway_for(recorder.url()).await;

    // A body sent a byte at a time: refused once the body deadline (2 s here) passes.
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /codingagent.chat.v1.ChatService/ListConversations HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web\r\nauthorization: Bearer {}\r\ncontent-length: 100\r\n\r\n",
        token("alice")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(15) {
        let _ = stream.write_all(&[0]).await;
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buffer)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buffer[..n]);
                if String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
                    break;
                }
            }
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.contains("grpc-status: 4"), "DEADLINE_EXCEEDED for a body that never finishes: {answer}");

    // A request head that never ends: the connection is closed.
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(b"POST / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection of a client that never finishes its head is closed");
    assert!(recorder.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_browser_that_goes_away_mid_stream_cancels_the_backend_stream() {
    let chat = Chat::start().await;
    let gateway = gateway_for(chat.url()).await;
    let alice = token("alice");
    let mut client = codingagent_proto::codingagent::chat::v1::chat_service_client::ChatServiceClient::new(
        gateway.channel().await,
    );
    let conversation = client
        .create_conversation(crate::harness::bearer(
            codingagent_proto::codingagent::chat::v1::CreateConversationRequest {
                title: "leaving".into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    let request =
        prost::Message::encode_to_vec(&codingagent_proto::codingagent::chat::v1::StreamConversationRequest {
            conversation_id: conversation.id,
            ..Default::default()
        });
    let body = frame(&request);
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /codingagent.chat.v1.ChatService/StreamConversation HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web+proto\r\nauthorization: Bearer {alice}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut buffer = [0u8; 1024];
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    let open = "method=\"StreamConversation\"";
    let in_flight = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("codingagent_grpc_server_in_flight") && l.contains(open))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .sum::<i64>()
    };
    assert_eq!(in_flight(&codingagent_testkit::metrics(chat.addr).await), 1, "the backend holds the stream");
    drop(stream);
    let mut last = 1;
    for _ in 0..100 {
        last = in_flight(&codingagent_testkit::metrics(chat.addr).await);
        if last == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, 0, "the backend's stream ended when the browser left");
}
