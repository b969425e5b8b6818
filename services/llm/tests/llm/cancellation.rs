//! A client that goes away mid-stream cancels the provider request, and the call is still on
//! the books. wiremock sends bodies whole, so this test uses a small Ollama stand-in that
//! streams one chunk every 100 ms and notices when its connection is closed.

use crate::harness::{Llm, Setup, fresh_prompt, options};
use codingagent_proto::codingagent::llm::v1 as pb;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TAGS: &str = r#"{"models":[{"name":"slow:1b","model":"slow:1b","size":1,"digest":"d","details":{"family":"x","parameter_size":"1B","quantization_level":"Q4_0"}}]}"#;

/// Serves `/api/tags` and a never-ending `/api/chat`; sets `closed` when a chat client leaves.
async fn slow_ollama(closed: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, closed.clone()));
        }
    });
    format!("http://{addr}")
}

async fn serve(mut socket: TcpStream, closed: Arc<AtomicBool>) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request).to_string();
    if !head.starts_with("POST /api/chat") {
        let body = if head.starts_with("GET /api/tags") { TAGS } else { "{}" };
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(response.as_bytes()).await;
        return;
    }
    let _ = socket
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .await;
    loop {
        let line = "{\"message\":{\"role\":\"assistant\",\"content\":\"word \"},\"done\":false}\n";
        let chunk = format!("{:x}\r\n{line}\r\n", line.len());
        if socket.write_all(chunk.as_bytes()).await.is_err() || socket.flush().await.is_err() {
            closed.store(true, Ordering::SeqCst);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn leaving_mid_stream_cancels_the_provider_call_and_records_it() {
    let closed = Arc::new(AtomicBool::new(false));
    let base = slow_ollama(closed.clone()).await;
    let llm =
        Llm::start(Setup { ollama_url: Some(base), ..Setup::default() }, wiremock::MockServer::start().await)
            .await;
    let mut alice = llm.user("alice").await;
    let request = pb::GenerateRequest {
        messages: fresh_prompt("talk forever"),
        model: "ollama/slow:1b".into(),
        options: options(0.5, 10_000),
        ..Default::default()
    };
    let mut stream = alice.generate(request).await.unwrap().into_inner();
    for _ in 0..3 {
        assert!(stream.message().await.unwrap().unwrap().text_delta.starts_with("word"));
    }
    drop(stream);

    let deadline = Instant::now() + Duration::from_secs(10);
    while !closed.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the provider request was never cancelled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let record = loop {
        let records = alice.list_usage(pb::ListUsageRequest::default()).await.unwrap().into_inner().records;
        if let Some(record) = records.into_iter().next() {
            break record;
        }
        assert!(Instant::now() < deadline, "the abandoned call was not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(record.outcome, pb::CallOutcome::Cancelled as i32);
    assert!(record.usage.unwrap().output_tokens > 0, "tokens produced before the client left are counted");
    llm.stop().await;
}
