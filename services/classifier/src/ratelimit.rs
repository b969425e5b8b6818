//! Classify calls per caller per minute, counted in Redis so every replica shares one budget.
//! A fixed one-minute window: one INCR per call, the key expiring with its window. When Redis
//! is down the limit is not enforced — classification matters more than the limit, and the
//! global concurrency limit still protects the service.

use codingagent_kernel::redis::RedisClient;
use fred::interfaces::KeysInterface;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Counts one call; `Err(wait)` when `caller` already made `limit` calls this minute.
pub(crate) async fn admit(redis: &RedisClient, caller: &str, limit: u32) -> Result<(), Duration> {
    if limit == 0 {
        return Ok(());
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let minute = now.as_secs() / 60;
    let key = format!("classifier:rate:{caller}:{minute}");
    let count: i64 = match redis.incr(&key).await {
        Ok(count) => count,
        Err(error) => {
            tracing::debug!(%error, "rate limit not enforced: redis unavailable");
            return Ok(());
        }
    };
    if count == 1 {
        // Two windows long, so a key never outlives its use by much nor expires early.
        let _: Result<i64, _> = redis.expire(&key, 120, None).await;
    }
    if count > i64::from(limit) {
        let next_window = Duration::from_secs((minute + 1) * 60);
        return Err(next_window.saturating_sub(now).max(Duration::from_secs(1)));
    }
    Ok(())
}
