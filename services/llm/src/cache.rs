//! Deterministic generations (temperature 0) cached in Redis: the same model, prompt and
//! options always produce the same text, so a repeat is served without a provider call.
//! Entries belong to one user (or service): a hit is observable (the `cache_hit` flag, the
//! latency, the usage record), so a shared entry would tell one user what another asked.
//! Redis being down only costs speed: lookups count as misses and stores are skipped.

use crate::request::Prompt;
use codingagent_kernel::redis::RedisClient;
use fred::interfaces::KeysInterface;
use fred::types::Expiration;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Entries larger than this are not cached: they are rare and would crowd Redis.
const MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// A cached generation: the text and what the original call reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub text: String,
    pub finish_reason: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

#[derive(Debug, Clone)]
pub struct Cache {
    redis: RedisClient,
    ttl_secs: i64,
    hits: Counter,
    misses: Counter,
}

impl Cache {
    pub fn new(
        redis: RedisClient,
        ttl_secs: i64,
        metrics: &codingagent_kernel::telemetry::metrics::Metrics,
    ) -> Self {
        let cache = Self { redis, ttl_secs, hits: Counter::default(), misses: Counter::default() };
        metrics.register("llm_cache_hits", "Generations served from the cache", cache.hits.clone());
        metrics.register(
            "llm_cache_misses",
            "Cacheable generations not found in the cache",
            cache.misses.clone(),
        );
        cache
    }

    /// `scope` is whose entries to look in: the effective user, or the calling service.
    pub async fn get(&self, scope: &str, model: &str, prompt: &Prompt) -> Option<Entry> {
        let found: Option<String> = match self.redis.get(key(scope, model, prompt)).await {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(%error, "cache lookup failed; treating as a miss");
                None
            }
        };
        let entry = found.and_then(|json| serde_json::from_str(&json).ok());
        if entry.is_some() {
            self.hits.inc()
        } else {
            self.misses.inc()
        };
        entry
    }

    pub async fn put(&self, scope: &str, model: &str, prompt: &Prompt, entry: &Entry) {
        let Ok(json) = serde_json::to_string(entry) else { return };
        if json.len() > MAX_ENTRY_BYTES {
            return;
        }
        let stored: Result<(), _> = self
            .redis
            .set(key(scope, model, prompt), json, Some(Expiration::EX(self.ttl_secs)), None, false)
            .await;
        if let Err(error) = stored {
            tracing::debug!(%error, "cache store failed");
        }
    }
}

/// The cache key: a hash of the scope, the model and the whole validated prompt with its
/// options. Versioned so a change of the entry format never reads old entries.
pub fn key(scope: &str, model: &str, prompt: &Prompt) -> String {
    let canonical = serde_json::to_vec(&(scope, model, prompt)).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("codingagent:llm:cache:v1:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Message, Options, Role};

    fn prompt(text: &str, temperature: f64) -> Prompt {
        Prompt {
            messages: vec![Message { role: Role::User, content: text.into(), name: None }],
            options: Options { temperature: Some(temperature), ..Options::default() },
        }
    }

    #[test]
    fn keys_depend_on_model_prompt_and_options() {
        let base = key("alice", "ollama/a", &prompt("hi", 0.0));
        assert_eq!(base, key("alice", "ollama/a", &prompt("hi", 0.0)));
        assert_ne!(base, key("alice", "ollama/b", &prompt("hi", 0.0)));
        assert_ne!(base, key("alice", "ollama/a", &prompt("hi!", 0.0)));
        assert_ne!(base, key("alice", "ollama/a", &prompt("hi", 0.5)));
        assert!(base.starts_with("codingagent:llm:cache:v1:"));
    }

    #[test]
    fn keys_belong_to_one_user() {
        assert_ne!(key("alice", "ollama/a", &prompt("hi", 0.0)), key("bob", "ollama/a", &prompt("hi", 0.0)));
        // The scope cannot run into the model: ("a", "b/c") and ("a/b", "c") differ.
        assert_ne!(key("a", "b/c", &prompt("hi", 0.0)), key("a/b", "c", &prompt("hi", 0.0)));
    }
}
