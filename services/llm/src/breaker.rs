//! A circuit breaker around the primary provider: after `threshold` consecutive failures it
//! opens for `cool_down`, sending calls to the fallback (when one is configured and within
//! budget) instead of waiting on a provider that is down; then one trial call decides
//! whether it closes again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is in flight; others are refused until it reports.
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Self { threshold: threshold.max(1), cool_down, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    pub fn state(&self) -> State {
        *self.lock()
    }

    /// Whether a call may go to the guarded provider now.
    pub fn allow(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    pub fn record_success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    pub fn record_failure(&self, now: Instant) {
        let mut state = self.lock();
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => {
                State::Closed { failures: failures + 1 }
            }
            State::Closed { .. } | State::HalfOpen | State::Open { .. } => {
                State::Open { until: now + self.cool_down }
            }
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_recovers_through_one_trial() {
        let breaker = Breaker::new(3, Duration::from_secs(30));
        let start = Instant::now();
        breaker.record_failure(start);
        breaker.record_failure(start);
        assert!(breaker.allow(start), "two failures are below the threshold");
        breaker.record_failure(start);
        assert!(!breaker.allow(start), "three consecutive failures open it");
        assert!(!breaker.allow(start + Duration::from_secs(29)));

        let later = start + Duration::from_secs(30);
        assert!(breaker.allow(later), "after the cool-down one trial call goes through");
        assert!(!breaker.allow(later), "but only one");
        breaker.record_failure(later);
        assert!(!breaker.allow(later + Duration::from_secs(1)), "a failed trial opens it again");

        let much_later = later + Duration::from_secs(30);
        assert!(breaker.allow(much_later));
        breaker.record_success();
        assert_eq!(breaker.state(), State::Closed { failures: 0 });
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::new(2, Duration::from_secs(1));
        let now = Instant::now();
        breaker.record_failure(now);
        breaker.record_success();
        breaker.record_failure(now);
        assert!(breaker.allow(now));
    }
}
