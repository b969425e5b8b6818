//! Verified tokens, remembered by the SHA-256 of the token so a warm call skips the
//! signature check (the expensive part: ~30 µs for RS256, more for ES256). Entries expire at
//! the token's own `exp` or after the configured TTL, whichever is first, and the map is
//! bounded: when full, expired entries go first, then arbitrary ones.

use codingagent_kernel::identity::Caller;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token hash → the caller it verified as.
#[derive(Debug)]
pub(crate) struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    capacity: usize,
    ttl: Duration,
}

#[derive(Debug, Clone)]
struct Entry {
    caller: Caller,
    until: Instant,
}

pub(crate) type TokenHash = [u8; 32];

pub(crate) fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self { entries: Mutex::new(HashMap::with_capacity(capacity.min(4096))), capacity, ttl }
    }

    pub(crate) fn get(&self, key: &TokenHash, now: Instant) -> Option<Caller> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some(entry) if entry.until > now => Some(entry.caller.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers `caller` until `expires` (the token's `exp`) or the TTL from `now`.
    pub(crate) fn put(&self, key: TokenHash, caller: Caller, now: Instant, expires: Instant) {
        let until = expires.min(now + self.ttl);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, entry| entry.until > now);
            // Still full of live tokens: drop an eighth, so the sweep is not paid per call.
            if entries.len() >= self.capacity {
                let drop: Vec<TokenHash> = entries.keys().take((self.capacity / 8).max(1)).copied().collect();
                for k in drop {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(key, Entry { caller, until });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_with_the_token_or_the_ttl() {
        let cache = TokenCache::new(10, Duration::from_secs(60));
        let now = Instant::now();
        let a = hash("a");
        cache.put(a, Caller::user("alice"), now, now + Duration::from_secs(5));
        assert_eq!(cache.get(&a, now).unwrap().subject, "alice");
        assert!(cache.get(&a, now + Duration::from_secs(6)).is_none(), "past the token's exp");
        let b = hash("b");
        cache.put(b, Caller::user("bob"), now, now + Duration::from_secs(3600));
        assert!(cache.get(&b, now + Duration::from_secs(61)).is_none(), "past the ttl");
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = TokenCache::new(100, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..10_000 {
            cache.put(hash(&i.to_string()), Caller::user("u"), now, now + Duration::from_secs(60));
        }
        assert!(cache.len() <= 100);
        assert_ne!(hash("a"), hash("b"));
    }
}
