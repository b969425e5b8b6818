//! Reaching a service a test started.

use codingagent_kernel::config::IdentityConfig;
use codingagent_kernel::identity::{Caller, StaticToken, TokenMinter};
use std::net::SocketAddr;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A channel to `addr`, retrying for up to 30 s while the server comes up.
pub async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = Channel::from_shared(format!("http://{addr}")).expect("a socket address is a valid URI");
    for _ in 0..600 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing accepts connections on {addr}");
}

/// Waits until the server at `addr` reports `SERVING` for the whole server (health service
/// name ""), for up to 60 s: a test that starts a service calls this before its first call,
/// so no test depends on how long migrations, seeding or dependency checks take.
pub async fn wait_until_serving(addr: SocketAddr) {
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus};
    let channel = connect(addr).await;
    let mut last = String::from("no answer");
    for _ in 0..1200 {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        if grpc.ready().await.is_ok() {
            match grpc
                .unary(tonic::Request::new(HealthCheckRequest { service: String::new() }), path, codec)
                .await
            {
                Ok(response) if response.get_ref().status == ServingStatus::Serving as i32 => return,
                Ok(response) => last = format!("status {}", response.get_ref().status),
                Err(status) => last = status.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} never reported SERVING (last: {last})");
}

/// A channel to `addr` that presents `caller`'s identity token, minted with `identity` (the
/// service's own settings), on every call; wrap it in the service's generated client.
pub async fn connect_as(
    addr: SocketAddr,
    identity: &IdentityConfig,
    caller: &Caller,
) -> InterceptedService<Channel, StaticToken> {
    let token = TokenMinter::new(identity).mint(caller).expect("the test's identity settings mint tokens");
    InterceptedService::new(connect(addr).await, StaticToken::new(Some(token)))
}

/// The whole HTTP response of `GET /metrics` on `addr` (status line, headers, Prometheus
/// text), as a scraper sees it.
pub async fn metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("the server accepts connections");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("the request is sent");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("the response is read");
    String::from_utf8_lossy(&response).into_owned()
}
