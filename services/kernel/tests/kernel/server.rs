//! The server skeleton: health, graceful shutdown, error details, limits, grpc-web, metrics.

use crate::harness::{TestServer, server_config};
use codingagent_kernel::server::DependencyCheck;
use codingagent_kernel::{config, db, redis};
use codingagent_testkit::TestDatabase;
use codingagent_testkit::pb::{CountRequest, FailRequest, SleepRequest};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

async fn health(server: &TestServer, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(server.channel().await);
    let response = client.check(HealthCheckRequest { service: service.into() }).await.expect("health check");
    response.into_inner().status()
}

async fn wait_for_health(server: &TestServer, service: &str, wanted: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(server, service).await != wanted {
        assert!(Instant::now() < deadline, "{service} never became {wanted:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_is_serving_only_while_dependencies_answer() {
    let database = TestDatabase::create().await.unwrap();
    let pool = database.pool().await.unwrap();
    let redis =
        redis::connect(&config::RedisConfig { url: config::Secret::new(codingagent_testkit::redis_url()) })
            .unwrap();
    let ready = Arc::new(AtomicBool::new(false));
    let flag = ready.clone();
    let toggle = DependencyCheck::new("toggle", move || {
        let ready = flag.load(Ordering::SeqCst);
        async move { if ready { Ok(()) } else { Err("not yet".to_owned()) } }
    });
    // A drain delay long enough that a busy machine still sees it before the port closes.
    let config =
        codingagent_kernel::config::ServerConfig { shutdown_drain_delay_ms: 2_000, ..server_config() };
    let server = TestServer::start(config, vec![db::check(pool), redis::check(redis), toggle]).await;

    // Several readiness rounds pass while one dependency is down: still not serving.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(health(&server, "").await, ServingStatus::NotServing);
    assert_eq!(health(&server, "codingagent.testkit.v1.ProbeService").await, ServingStatus::NotServing);

    ready.store(true, Ordering::SeqCst);
    wait_for_health(&server, "", ServingStatus::Serving).await;
    wait_for_health(&server, "codingagent.testkit.v1.ProbeService", ServingStatus::Serving).await;

    // A dependency that stops answering takes the service out of rotation again.
    ready.store(false, Ordering::SeqCst);
    wait_for_health(&server, "", ServingStatus::NotServing).await;
    ready.store(true, Ordering::SeqCst);
    wait_for_health(&server, "", ServingStatus::Serving).await;

    // Shutdown reports NOT_SERVING first, and only after the drain delay stops accepting.
    let mut health_client = HealthClient::new(server.channel().await);
    server.shutdown.cancel();
    let deadline = Instant::now() + Duration::from_millis(1_500);
    loop {
        let status = health_client
            .check(HealthCheckRequest { service: String::new() })
            .await
            .expect("still accepting during the drain delay");
        if status.get_ref().status() == ServingStatus::NotServing {
            break;
        }
        assert!(Instant::now() < deadline, "health never turned NOT_SERVING on shutdown");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.handle.await.unwrap().unwrap();
    database.drop_database().await.unwrap();
}

#[tokio::test]
async fn in_flight_unary_and_streaming_calls_finish_during_graceful_shutdown() {
    let server = TestServer::start(server_config(), vec![]).await;
    let mut unary_client = server.client_as("alice").await;
    let mut stream_client = server.client_as("alice").await;

    let unary = tokio::spawn(async move {
        unary_client.sleep(SleepRequest { millis: 800, payload: b"still here".to_vec() }).await
    });
    let streaming = tokio::spawn(async move {
        let mut stream =
            stream_client.count(CountRequest { count: 6, interval_millis: 150 }).await?.into_inner();
        let mut seen = Vec::new();
        while let Some(item) = stream.message().await? {
            seen.push(item.index);
        }
        Ok::<_, tonic::Status>(seen)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.shutdown.cancel();

    assert_eq!(unary.await.unwrap().unwrap().into_inner().payload, b"still here");
    assert_eq!(streaming.await.unwrap().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    server.handle.await.unwrap().unwrap();
    // Once drained, the port is closed to new calls.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn shutdown_gives_up_on_calls_that_outlast_the_grace_period() {
    let config = codingagent_kernel::config::ServerConfig { shutdown_grace_secs: 1, ..server_config() };
    let server = TestServer::start(config, vec![]).await;
    let mut client = server.client_as("alice").await;
    let stuck =
        tokio::spawn(async move { client.sleep(SleepRequest { millis: 60_000, payload: vec![] }).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.shutdown.cancel();
    server.handle.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown waited {:?}", started.elapsed());
    stuck.abort();
}

#[tokio::test]
async fn error_details_reach_the_client() {
    let server = TestServer::start(server_config(), vec![]).await;
    let mut client = server.client_as("alice").await;

    let status = client.fail(FailRequest { kind: "invalid".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // The details travel in grpc-status-details-bin as an encoded google.rpc.Status.
    let raw = <tonic_types::Status as prost::Message>::decode(status.details()).expect("google.rpc.Status");
    assert_eq!(raw.code, Code::InvalidArgument as i32);
    let details = status.get_error_details();
    let fields: Vec<&str> = details
        .bad_request()
        .expect("BadRequest")
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["text", "page_size"]);
    assert_eq!(details.error_info().expect("ErrorInfo").reason, "INVALID_ARGUMENT");

    let status = client.fail(FailRequest { kind: "exhausted".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.get_error_details().retry_info().unwrap().retry_delay, Some(Duration::from_secs(30)));

    let status = client.fail(FailRequest { kind: "not_found".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.get_error_details().resource_info().unwrap().resource_name, "t-1");

    let status = client.fail(FailRequest { kind: "boom".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(!status.message().contains("hunter2"), "internal causes must not leak: {}", status.message());
}

#[tokio::test]
async fn oversized_requests_are_resource_exhausted() {
    let server = TestServer::start(server_config(), vec![]).await;
    let mut client = server.client_as("alice").await;
    let status = client.sleep(SleepRequest { millis: 0, payload: vec![7; 100 * 1024] }).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.get_error_details().error_info().unwrap().reason, "MESSAGE_TOO_LARGE");
    // A request within the limit still works on the same server.
    let ok = client.sleep(SleepRequest { millis: 0, payload: vec![7; 1024] }).await.unwrap();
    assert_eq!(ok.into_inner().payload.len(), 1024);
}

/// One HTTP/1.1 exchange on a fresh connection; returns the raw response.
async fn http1(server: &TestServer, request: Vec<u8>) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await.unwrap().unwrap();
    response
}

#[tokio::test]
async fn grpc_web_calls_work_over_http1_with_readable_status_headers() {
    let server = TestServer::start(server_config(), vec![]).await;
    let token = server.token_for("alice");
    let message = prost::Message::encode_to_vec(&SleepRequest { millis: 0, payload: b"web".to_vec() });
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let mut request = format!(
        "POST /codingagent.testkit.v1.ProbeService/Sleep HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost:4200\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nx-codingagent-identity: {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let response = String::from_utf8_lossy(&http1(&server, request).await).to_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(response.contains("access-control-allow-origin: http://localhost:4200"), "{response}");
    assert!(response.contains("access-control-expose-headers"), "{response}");
    assert!(response.contains("grpc-status-details-bin"), "{response}");
    // grpc-web carries the trailers in the body.
    assert!(response.contains("grpc-status:0"), "{response}");

    let preflight = "OPTIONS /codingagent.testkit.v1.ProbeService/Sleep HTTP/1.1\r\nHost: localhost\r\n\
        Origin: http://localhost:4200\r\nAccess-Control-Request-Method: POST\r\n\
        Access-Control-Request-Headers: content-type,x-grpc-web,x-codingagent-identity\r\nConnection: close\r\n\r\n";
    let response =
        String::from_utf8_lossy(&http1(&server, preflight.as_bytes().to_vec()).await).to_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(response.contains("x-codingagent-identity"), "{response}");
}

#[tokio::test]
async fn metrics_count_every_rpc_by_status() {
    let server = TestServer::start(server_config(), vec![]).await;
    let mut client = server.client_as("alice").await;
    client.sleep(SleepRequest { millis: 0, payload: vec![] }).await.unwrap();
    client.fail(FailRequest { kind: "not_found".into() }).await.unwrap_err();
    let mut stream = client.count(CountRequest { count: 2, interval_millis: 1 }).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}

    // Plain HTTP is counted too, by status: an unauthenticated request and a first scrape.
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
    };
    http1(&server, get("/v1/private")).await;
    http1(&server, get("/metrics")).await;
    let response = http1(&server, get("/metrics")).await;
    let text = String::from_utf8_lossy(&response);
    for expected in [
        r#"codingagent_grpc_server_handled_total{service="codingagent.testkit.v1.ProbeService",method="Sleep",code="Ok"} 1"#,
        r#"codingagent_grpc_server_handled_total{service="codingagent.testkit.v1.ProbeService",method="Fail",code="NotFound"} 1"#,
        r#"codingagent_grpc_server_handled_total{service="codingagent.testkit.v1.ProbeService",method="Count",code="Ok"} 1"#,
        r#"codingagent_grpc_server_handling_seconds_count{service="codingagent.testkit.v1.ProbeService",method="Sleep"} 1"#,
        r#"codingagent_grpc_server_handled_total{service="http",method="other",code="Http401"} 1"#,
        r#"codingagent_grpc_server_handled_total{service="http",method="other",code="Ok"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
}

/// A self-signed certificate for `localhost`, made with the openssl command line.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A leaf, not a CA: rustls refuses a CA certificate used as the server's own.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    (cert, key)
}

#[tokio::test]
async fn tls_serves_calls_and_refuses_plaintext() {
    let dir = std::env::temp_dir().join(codingagent_testkit::unique_name("kernel-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir);
    let tls = codingagent_kernel::config::ServerTlsConfig {
        cert_file: cert.clone(),
        key_file: key,
        client_ca_file: None,
    };
    let server = TestServer::start(config::ServerConfig { tls: Some(tls), ..server_config() }, vec![]).await;

    let ca = tonic::transport::Certificate::from_pem(std::fs::read(&cert).unwrap());
    let channel = tonic::transport::Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
        .unwrap()
        .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(ca).domain_name("localhost"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = Some(server.token_for("alice"));
    let mut client = codingagent_testkit::pb::probe_service_client::ProbeServiceClient::with_interceptor(
        channel,
        codingagent_kernel::identity::StaticToken::new(token),
    );
    let echoed = client.sleep(SleepRequest { millis: 0, payload: b"over tls".to_vec() }).await.unwrap();
    assert_eq!(echoed.into_inner().payload, b"over tls");

    // A plaintext client gets no answer from the TLS port.
    let mut plain = server.client_as("alice").await;
    assert!(plain.sleep(SleepRequest { millis: 0, payload: vec![] }).await.is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_required_background_task_that_keeps_failing_makes_the_service_not_serving() {
    use codingagent_kernel::server::Background;
    let running = Background::required("consumer", |stop| async move {
        stop.cancelled().await;
        Ok(())
    });
    let server = TestServer::start_with(server_config(), vec![], vec![running]).await;
    wait_for_health(&server, "", ServingStatus::Serving).await;

    let failing =
        Background::required("consumer", |_stop| async { anyhow::bail!("broker refused the group") });
    let server = TestServer::start_with(server_config(), vec![], vec![failing]).await;
    wait_for_health(&server, "", ServingStatus::NotServing).await;
    // It stays down: every restart fails again, and each is counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(health(&server, "").await, ServingStatus::NotServing);
    let metrics = server.metrics_text().await;
    assert!(metrics.contains("codingagent_background_restarts_total{task=\"consumer\"}"), "{metrics}");
}
