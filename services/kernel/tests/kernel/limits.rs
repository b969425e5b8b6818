//! What the server does with callers who try to exhaust it: calls to made-up methods without
//! a token, more open streams than a caller may hold, and a request body sent one byte at a
//! time.

use crate::harness::{TestServer, server_config};
use codingagent_kernel::config::ServerConfig;
use codingagent_testkit::pb::{CountRequest, SleepRequest, SleepResponse};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic_types::StatusExt;

/// The RPC series `/metrics` holds now.
async fn rpc_series(server: &TestServer) -> usize {
    codingagent_testkit::metrics(server.addr)
        .await
        .lines()
        .filter(|line| line.starts_with("codingagent_grpc_server_"))
        .count()
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Calls `path` (which the server does not serve) without a token.
async fn call_unknown(grpc: &mut tonic::client::Grpc<tonic::transport::Channel>, path: String) -> Code {
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let codec = tonic_prost::ProstCodec::<SleepRequest, SleepResponse>::default();
    grpc.unary(tonic::Request::new(SleepRequest::default()), path, codec).await.unwrap_err().code()
}

/// 2,000 calls by default; `CODINGAGENT_UNKNOWN_CALLS=100000` for the measurement recorded in
/// docs/BENCHMARKS.md (it prints the RSS too).
#[tokio::test]
async fn calls_to_unknown_methods_add_no_metric_series() {
    let calls: usize =
        std::env::var("CODINGAGENT_UNKNOWN_CALLS").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
    let server = TestServer::start(server_config(), vec![]).await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    // The first unknown call and the first scrape create their series once.
    assert_eq!(call_unknown(&mut grpc, "/warm.up.v1.Service/Up".into()).await, Code::Unauthenticated);
    rpc_series(&server).await;
    let (series_before, rss_before) = (rpc_series(&server).await, rss_kib());
    for i in 0..calls {
        let code = call_unknown(&mut grpc, format!("/made.up{i}.v1.Service{i}/Method{i}")).await;
        assert_eq!(code, Code::Unauthenticated);
    }
    let (series_after, rss_after) = (rpc_series(&server).await, rss_kib());
    eprintln!(
        "{calls} unknown calls: rpc series {series_before} -> {series_after}, rss {rss_before} KiB -> {rss_after} KiB"
    );
    assert_eq!(series_after, series_before, "each made-up path added series");
}

#[tokio::test]
async fn a_caller_past_its_stream_limit_is_refused_until_one_closes() {
    let config = ServerConfig { max_streams_per_caller: 2, ..server_config() };
    let server = TestServer::start(config, vec![]).await;
    let mut alice = server.client_as("alice").await;
    let long = || CountRequest { count: 10_000, interval_millis: 100 };
    let first = alice.count(long()).await.unwrap().into_inner();
    let _second = alice.count(long()).await.unwrap().into_inner();

    let refused = alice.count(long()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let details = refused.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "TOO_MANY_STREAMS");
    assert!(details.retry_info().and_then(|r| r.retry_delay).is_some(), "no RetryInfo");

    // Other callers and alice's unary calls are not affected.
    let mut bob = server.client_as("bob").await;
    let _bobs = bob.count(long()).await.unwrap().into_inner();
    alice.sleep(SleepRequest { millis: 0, payload: vec![] }).await.unwrap();

    // Closing a stream frees its slot once the server sees the end.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match alice.count(long()).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("the closed stream's slot was not freed: {status:?}"),
        }
    }
}

#[tokio::test]
async fn a_request_body_sent_one_byte_at_a_time_is_cut_off_at_the_timeout() {
    let config = ServerConfig { request_body_timeout_ms: 1_000, ..server_config() };
    let server = TestServer::start(config, vec![]).await;
    let token = server.token_for("alice");
    let message = prost::Message::encode_to_vec(&SleepRequest { millis: 0, payload: vec![1; 40] });
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let head = format!(
        "POST /codingagent.testkit.v1.ProbeService/Sleep HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nx-codingagent-identity: {token}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    // 45 bytes at 5 per second take 9 s; the server must answer before they are all sent.
    let trickle = tokio::spawn(async move {
        for byte in body {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut response = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut response))
        .await
        .expect("the slow request was not cut off")
        .unwrap();
    let response = String::from_utf8_lossy(&response[..read]).to_lowercase();
    assert!(!trickle.is_finished(), "answered only after the whole body arrived");
    assert!(response.contains("grpc-status: 4") || response.contains("grpc-status:4"), "{response}");
    trickle.abort();
}
