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
