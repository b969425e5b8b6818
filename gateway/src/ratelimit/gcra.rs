//! The generic cell rate algorithm, the one rule both limiters apply: each key keeps a
//! theoretical arrival time (TAT); a call is allowed when it would not push the TAT more
//! than `burst` emission intervals past now. It needs one number per key and no timers, and
//! refills smoothly (no window edges a client can burst across).

use std::collections::HashMap;
use std::sync::Mutex;

/// The interval between calls at the sustained rate and the burst tolerance, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    pub(crate) emission_us: u64,
    pub(crate) tolerance_us: u64,
}

impl Params {
    pub(crate) fn new(rate: &crate::config::Rate) -> Self {
        let emission_us = (rate.period_secs * 1_000_000 / rate.requests.max(1)).max(1);
        Self { emission_us, tolerance_us: emission_us * rate.burst }
    }
}

/// One decision: the new TAT when allowed, else how long until a call would be.
pub(crate) fn decide(tat: Option<u64>, now_us: u64, params: Params) -> Result<u64, u64> {
    let tat = tat.unwrap_or(now_us).max(now_us);
    let next = tat + params.emission_us;
    let wait = next.saturating_sub(now_us + params.tolerance_us);
    if wait > 0 { Err(wait) } else { Ok(next) }
}

/// The limiter used while Redis is unreachable: the same algorithm in this process's
/// memory. With several gateway replicas each allows the full rate, so the effective limit
/// is up to replicas × rate until Redis returns — a looser limit, never none.
#[derive(Debug, Default)]
pub(crate) struct LocalStore {
    tats: Mutex<HashMap<String, u64>>,
}

/// Keys kept before expired ones are swept.
const LOCAL_SWEEP_AT: usize = 100_000;

impl LocalStore {
    /// Allowed only when every key allows; then all of them are charged.
    pub(crate) fn check(&self, keys: &[(String, Params)], now_us: u64) -> Result<(), u64> {
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        if tats.len() > LOCAL_SWEEP_AT {
            tats.retain(|_, tat| *tat > now_us);
        }
        let mut next = Vec::with_capacity(keys.len());
        let mut wait = 0;
        for (key, params) in keys {
            match decide(tats.get(key).copied(), now_us, *params) {
                Ok(tat) => next.push(tat),
                Err(w) => wait = wait.max(w),
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        for ((key, _), tat) in keys.iter().zip(next) {
            tats.insert(key.clone(), tat);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rate;

    #[test]
    fn a_burst_is_allowed_then_one_call_per_interval() {
        let params = Params::new(&Rate { requests: 10, period_secs: 1, burst: 10 });
        assert_eq!(params.emission_us, 100_000);
        let store = LocalStore::default();
        let key = vec![("k".to_owned(), params)];
        let now = 1_000_000_000;
        for i in 0..10 {
            assert!(store.check(&key, now).is_ok(), "call {i} of the burst");
        }
        let wait = store.check(&key, now).unwrap_err();
        assert_eq!(wait, 100_000, "the 11th waits one interval");
        assert!(store.check(&key, now + 100_000).is_ok());
        assert!(store.check(&key, now + 100_000).is_err());
    }

    #[test]
    fn a_refused_call_charges_no_key() {
        let tight = Params::new(&Rate { requests: 1, period_secs: 60, burst: 1 });
        let loose = Params::new(&Rate { requests: 100, period_secs: 1, burst: 100 });
        let store = LocalStore::default();
        let now = 5_000_000;
        assert!(store.check(&[("user".into(), tight), ("ip".into(), loose)], now).is_ok());
        assert!(store.check(&[("user".into(), tight), ("ip".into(), loose)], now).is_err());
        // The IP key was not charged by the refused call: 99 more fit.
        for _ in 0..99 {
            assert!(store.check(&[("ip".into(), loose)], now).is_ok());
        }
        assert!(store.check(&[("ip".into(), loose)], now).is_err());
    }
}
