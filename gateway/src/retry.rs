//! When a failed call may be tried again: only methods the contract marks idempotent, only
//! failures that mean "this endpoint could not take it" (no connection, `UNAVAILABLE`),
//! after a jittered exponential backoff, and only while the retry budget lasts — retries may
//! add at most `retry_budget_percent` of the calls plus `retry_min_per_sec`, so a struggling
//! backend is not buried under a retry storm.

use rand::Rng;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket of retries, filled by calls and by time.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    state: Mutex<(f64, Instant)>,
    per_call: f64,
    per_sec: f64,
    cap: f64,
}

impl RetryBudget {
    pub(crate) fn new(percent: f64, min_per_sec: f64) -> Self {
        let cap = (min_per_sec * 10.0).max(10.0);
        Self {
            state: Mutex::new((cap, Instant::now())),
            per_call: percent / 100.0,
            per_sec: min_per_sec,
            cap,
        }
    }

    /// Credits one original call.
    pub(crate) fn deposit(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = (state.0 + self.per_call).min(self.cap);
    }

    /// Takes one retry from the budget, if any is left.
    pub(crate) fn withdraw(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(state.1).as_secs_f64();
        state.0 = (state.0 + elapsed * self.per_sec).min(self.cap);
        state.1 = now;
        if state.0 >= 1.0 {
            state.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The wait before attempt `attempt` (1 = the first retry): full jitter over an exponential
/// ceiling, so retries of many clients spread out instead of arriving together.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << attempt.min(10));
    let micros = ceiling.as_micros().min(u128::from(u64::MAX)) as u64;
    Duration::from_micros(rand::rng().random_range(0..=micros.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_runs_out_and_calls_refill_it() {
        let budget = RetryBudget::new(50.0, 0.0);
        let mut granted = 0;
        while budget.withdraw() {
            granted += 1;
            assert!(granted <= 10, "the bucket starts at its cap");
        }
        assert_eq!(granted, 10);
        budget.deposit();
        assert!(!budget.withdraw(), "half a retry per call: one call is not enough");
        budget.deposit();
        assert!(budget.withdraw());
    }

    #[test]
    fn backoff_stays_under_its_exponential_ceiling() {
        for attempt in 1..5 {
            for _ in 0..100 {
                assert!(backoff(Duration::from_millis(25), attempt) <= Duration::from_millis(25 << attempt));
            }
        }
    }
}
