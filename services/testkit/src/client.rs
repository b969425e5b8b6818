//! Reaching a service a test started.

use std::net::SocketAddr;
use std::time::Duration;
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
