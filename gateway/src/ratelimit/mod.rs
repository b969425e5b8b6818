//! Rate limits per user and per client IP, by method group, shared by every gateway
//! replica through Redis: one Lua script checks and charges both keys atomically with
//! Redis's own clock, in one round trip. While Redis cannot answer (down, or slower than
//! [`REDIS_TIMEOUT`]) the same algorithm runs in memory ([`gcra::LocalStore`]), so limits
//! loosen during an outage instead of disappearing or failing every call.

mod gcra;

use crate::config::{LimitGroup, RateLimitConfig};
use crate::metrics::GatewayMetrics;
use codingagent_kernel::redis::RedisClient;
use fred::interfaces::ClientLike;
use fred::interfaces::LuaInterface;
use fred::types::config::Options;
use gcra::{LocalStore, Params};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest the gateway waits for Redis before deciding locally.
pub(crate) const REDIS_TIMEOUT: Duration = Duration::from_millis(50);

/// KEYS: the limited keys; ARGV: emission interval and tolerance (µs) per key. Returns 0
/// when allowed (every key charged) or the µs to wait (no key charged).
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
local next = {}
for i, key in ipairs(KEYS) do
  local emission = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local w = tat + emission - now - tolerance
  if w > wait then wait = w end
  next[i] = tat + emission
end
if wait > 0 then return math.ceil(wait) end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%d', next[i]), 'PX', math.ceil((next[i] - now) / 1000) + 1000)
end
return 0
";

/// Whether a call may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allowed,
    /// Refused by `group`; a call would be allowed after `retry_after`.
    Limited {
        group: usize,
        retry_after: Duration,
    },
}

/// The gateway's limiter.
#[derive(Debug)]
pub(crate) struct Limiter {
    groups: Vec<(LimitGroup, Option<Params>, Option<Params>)>,
    redis: Option<RedisClient>,
    local: LocalStore,
    metrics: GatewayMetrics,
}

impl Limiter {
    pub(crate) fn new(config: &RateLimitConfig, redis: Option<RedisClient>, metrics: GatewayMetrics) -> Self {
        let groups = if config.enabled {
            config
                .groups
                .iter()
                .map(|g| {
                    (g.clone(), g.per_user.as_ref().map(Params::new), g.per_ip.as_ref().map(Params::new))
                })
                .collect()
        } else {
            Vec::new()
        };
        Self { groups, redis, local: LocalStore::default(), metrics }
    }

    /// The group name of a decision, for messages.
    pub(crate) fn group_name(&self, group: usize) -> &str {
        self.groups.get(group).map_or("", |(g, _, _)| g.name.as_str())
    }

    /// Checks and charges the call to `path` by `user` (when authenticated) from `ip`.
    pub(crate) async fn check(&self, path: &str, user: Option<&str>, ip: IpAddr) -> Decision {
        let Some((index, (group, per_user, per_ip))) = self
            .groups
            .iter()
            .enumerate()
            .find(|(_, (g, _, _))| g.methods.iter().any(|prefix| path.starts_with(prefix.as_str())))
        else {
            return Decision::Allowed;
        };
        let mut keys = Vec::with_capacity(2);
        if let (Some(params), Some(user)) = (per_user, user) {
            keys.push((format!("codingagent:gateway:rl:{}:u:{user}", group.name), *params));
        }
        if let Some(params) = per_ip {
            keys.push((format!("codingagent:gateway:rl:{}:ip:{ip}", group.name), *params));
        }
        if keys.is_empty() {
            return Decision::Allowed;
        }
        let (outcome, store) = match self.check_redis(&keys).await {
            Some(outcome) => (outcome, "redis"),
            None => (self.local.check(&keys, unix_micros()), "local"),
        };
        let decision = match outcome {
            Ok(()) => Decision::Allowed,
            Err(wait) => Decision::Limited { group: index, retry_after: Duration::from_micros(wait) },
        };
        self.metrics.rate_limit(&group.name, matches!(decision, Decision::Allowed), store);
        decision
    }

    async fn check_redis(&self, keys: &[(String, Params)]) -> Option<Result<(), u64>> {
        let redis = self.redis.as_ref()?;
        let names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
        let args: Vec<i64> =
            keys.iter().flat_map(|(_, p)| [p.emission_us as i64, p.tolerance_us as i64]).collect();
        let options = Options {
            timeout: Some(REDIS_TIMEOUT),
            fail_fast: true,
            max_attempts: Some(1),
            ..Options::default()
        };
        match redis.with_options(&options).eval::<i64, _, _, _>(SCRIPT, names, args).await {
            Ok(0) => Some(Ok(())),
            Ok(wait) => Some(Err(wait.max(1) as u64)),
            Err(error) => {
                tracing::debug!(%error, "rate limit store unreachable; limiting locally");
                None
            }
        }
    }
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or_default()
}
