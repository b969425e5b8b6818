//! A circuit breaker per backend endpoint. `breaker_failures` consecutive failures open it:
//! calls then skip the endpoint (or fail fast with `UNAVAILABLE` when no endpoint is left)
//! instead of each waiting for a dead server. After `breaker_open_ms` one probe call is let
//! through (half-open); its success closes the breaker, its failure opens it again.
//!
//! A failure is what says the endpoint itself is unwell: a connection that cannot be made or
//! breaks, or an `UNAVAILABLE` answer. Application errors (`NOT_FOUND`, `INVALID_ARGUMENT`…)
//! are successes here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The breaker's state, as the `gateway_breaker_state` gauge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Closed,
    HalfOpen,
    Open,
}

impl State {
    pub(crate) fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    failures: u32,
    opened_at: Instant,
    probe_in_flight: bool,
}

/// One endpoint's breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    inner: Mutex<Inner>,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_for: Duration) -> Self {
        let inner =
            Inner { state: State::Closed, failures: 0, opened_at: Instant::now(), probe_in_flight: false };
        Self { inner: Mutex::new(inner), threshold: threshold.max(1), open_for }
    }

    pub(crate) fn state(&self) -> State {
        self.lock().state
    }

    /// Whether a call may use the endpoint now. In half-open state only one call (the
    /// probe) is let through until it reports.
    pub(crate) fn try_acquire(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        match inner.state {
            State::Closed => true,
            State::Open if now.duration_since(inner.opened_at) >= self.open_for => {
                inner.state = State::HalfOpen;
                inner.probe_in_flight = true;
                true
            }
            State::Open => false,
            State::HalfOpen if !inner.probe_in_flight => {
                inner.probe_in_flight = true;
                true
            }
            State::HalfOpen => false,
        }
    }

    /// Would [`Self::try_acquire`] let a call through, without taking the probe.
    pub(crate) fn is_available(&self, now: Instant) -> bool {
        let inner = self.lock();
        match inner.state {
            State::Closed => true,
            State::Open => now.duration_since(inner.opened_at) >= self.open_for,
            State::HalfOpen => !inner.probe_in_flight,
        }
    }

    /// Reports a call's outcome; returns the state after it.
    pub(crate) fn record(&self, success: bool, now: Instant) -> State {
        let mut inner = self.lock();
        if success {
            inner.failures = 0;
            inner.state = State::Closed;
            inner.probe_in_flight = false;
        } else {
            inner.failures = inner.failures.saturating_add(1);
            if inner.state == State::HalfOpen || inner.failures >= self.threshold {
                inner.state = State::Open;
                inner.opened_at = now;
                inner.probe_in_flight = false;
            }
        }
        inner.state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_probes_once_and_closes_on_success() {
        let breaker = Breaker::new(3, Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(breaker.try_acquire(t0));
        breaker.record(false, t0);
        breaker.record(true, t0);
        breaker.record(false, t0);
        breaker.record(false, t0);
        assert_eq!(breaker.state(), State::Closed, "a success in between resets the count");
        assert_eq!(breaker.record(false, t0), State::Open);
        assert!(!breaker.try_acquire(t0 + Duration::from_secs(1)), "open: calls fail fast");
        let later = t0 + Duration::from_secs(5);
        assert!(breaker.is_available(later));
        assert!(breaker.try_acquire(later), "the probe");
        assert_eq!(breaker.state(), State::HalfOpen);
        assert!(!breaker.try_acquire(later), "one probe at a time");
        assert_eq!(breaker.record(true, later), State::Closed);
        assert!(breaker.try_acquire(later));
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let breaker = Breaker::new(1, Duration::from_millis(100));
        let t0 = Instant::now();
        breaker.record(false, t0);
        let later = t0 + Duration::from_millis(100);
        assert!(breaker.try_acquire(later));
        assert_eq!(breaker.record(false, later), State::Open);
        assert!(!breaker.try_acquire(later + Duration::from_millis(50)));
        assert!(breaker.try_acquire(later + Duration::from_millis(100)));
    }
}
