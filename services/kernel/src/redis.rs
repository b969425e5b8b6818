//! Redis through fred. Redis holds only caches, presence and fan-out, so services must keep
//! working (slower) while it is down: the client connects in the background, reconnects
//! forever and fails commands fast instead of queueing them.

use crate::config::RedisConfig;
use fred::prelude::{ClientLike, Config, ReconnectPolicy};
use std::time::Duration;

pub use fred::clients::SubscriberClient;
pub use fred::prelude::Client as RedisClient;

fn builder(config: &RedisConfig) -> Result<fred::types::Builder, fred::error::Error> {
    let mut redis_config = Config::from_url(config.url.expose())?;
    redis_config.fail_fast = true;
    let mut builder = fred::types::Builder::from_config(redis_config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(1);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    Ok(builder)
}

/// Builds a client and starts connecting without waiting for the first connection.
pub fn connect(config: &RedisConfig) -> Result<RedisClient, fred::error::Error> {
    let client = builder(config)?.build()?;
    // The handle ends only when the client quits; dropping it does not stop the connection.
    drop(client.connect());
    Ok(client)
}

/// A pub/sub client on its own connection, connecting in the background like [`connect`],
/// that subscribes again to its channels and patterns after every reconnect.
pub fn subscriber(config: &RedisConfig) -> Result<SubscriberClient, fred::error::Error> {
    let client = builder(config)?.build_subscriber_client()?;
    drop(client.connect());
    drop(client.manage_subscriptions());
    Ok(client)
}

/// Health check: Redis answers PING.
pub fn check(client: RedisClient) -> crate::server::DependencyCheck {
    crate::server::DependencyCheck::new("redis", move || {
        let client = client.clone();
        async move {
            use fred::interfaces::ClientLike as _;
            client.ping::<String>(None).await.map(drop).map_err(|e| e.to_string())
        }
    })
}
