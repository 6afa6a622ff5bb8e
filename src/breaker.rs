//! The circuit breaker every outbound dependency goes through (database prober, Redis users,
//! the remote embedder): after `threshold` failures in a row it opens, and calls skip the
//! dependency (fail fast, or fall back) for `open_for`. Then it lets one call through as a probe
//! (half-open): success closes it, failure opens it again. State changes are logged once each
//! and exported as `soko_circuit_breaker_state{dependency}` (0 closed, 1 open, 2 half-open) and
//! `soko_circuit_breaker_opened_total{dependency}`.
//!
//! A breaker made with [`CircuitBreaker::probed`] never lets a user's call probe: it stays open
//! until the dependency's background prober reports a success, so no call a user made ever
//! waits out a timeout on a dependency known to be failing.
//!
//! Lock-free: `allows` is on the path of every call that uses the dependency.

use std::{
    sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering},
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

pub struct CircuitBreaker {
    dependency: &'static str,
    threshold: u32,
    open_for: Duration,
    failures: AtomicU32,
    /// Microseconds since `epoch` until which the breaker stays open; 0 when closed.
    open_until: AtomicI64,
    /// A probe is out while half-open: only one call tests the dependency at a time.
    probing: AtomicBool,
    /// Closed only by a background prober's success: never half-open.
    probed: bool,
    epoch: Instant,
}

impl CircuitBreaker {
    pub fn new(dependency: &'static str, threshold: u32, open_for: Duration) -> Self {
        metrics::gauge!("soko_circuit_breaker_state", "dependency" => dependency).set(0.0);
        Self {
            dependency,
            threshold: threshold.max(1),
            open_for,
            failures: AtomicU32::new(0),
            open_until: AtomicI64::new(0),
            probing: AtomicBool::new(false),
            probed: false,
            epoch: Instant::now(),
        }
    }

    /// A breaker whose dependency a background prober watches: it opens after `threshold`
    /// failures and closes when the prober reports a success.
    pub fn probed(dependency: &'static str, threshold: u32) -> Self {
        Self { probed: true, ..Self::new(dependency, threshold, Duration::from_secs(3600)) }
    }

    pub fn dependency(&self) -> &'static str {
        self.dependency
    }

    fn now_us(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX).max(1)
    }

    pub fn state(&self) -> BreakerState {
        match self.open_until.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            _ if self.probed => BreakerState::Open,
            until if self.now_us() < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may use the dependency now. Half-open, only the first caller gets through
    /// (the probe); the others are refused until it reports.
    pub fn allows(&self) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                let first = !self.probing.swap(true, Ordering::AcqRel);
                if first {
                    metrics::gauge!("soko_circuit_breaker_state", "dependency" => self.dependency)
                        .set(BreakerState::HalfOpen.gauge());
                }
                first
            }
        }
    }

    /// Records a success: the breaker closes if it was not. True when this closed it.
    pub fn succeeded(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        self.probing.store(false, Ordering::Release);
        let closed = self.open_until.swap(0, Ordering::AcqRel) != 0;
        if closed {
            tracing::info!(dependency = self.dependency, "circuit breaker closed: the dependency answers again");
            metrics::gauge!("soko_circuit_breaker_state", "dependency" => self.dependency)
                .set(BreakerState::Closed.gauge());
        }
        closed
    }

    /// Records a failure: opens the breaker at the threshold, or again after a failed probe.
    /// True when this opened a closed breaker.
    pub fn failed(&self, error: &dyn std::fmt::Display) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let was = self.state();
        if failures < self.threshold && was == BreakerState::Closed {
            return false;
        }
        let until = self.now_us().saturating_add(i64::try_from(self.open_for.as_micros()).unwrap_or(i64::MAX));
        self.open_until.store(until, Ordering::Release);
        self.probing.store(false, Ordering::Release);
        metrics::gauge!("soko_circuit_breaker_state", "dependency" => self.dependency).set(BreakerState::Open.gauge());
        if was == BreakerState::Closed {
            metrics::counter!("soko_circuit_breaker_opened_total", "dependency" => self.dependency).increment(1);
            crate::telemetry::sentry::capture_breaker_opened(self.dependency, &error.to_string());
            tracing::warn!(
                dependency = self.dependency,
                failures,
                retry_in_ms = if self.probed { None } else { Some(self.open_for.as_millis() as u64) },
                error = %error,
                "circuit breaker opened: skipping the dependency"
            );
        }
        was == BreakerState::Closed
    }

    /// Whether the breaker is not closed: the dependency is being skipped or probed.
    pub fn degraded(&self) -> bool {
        self.state() != BreakerState::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_the_threshold_probes_once_and_closes_on_success() {
        let breaker = CircuitBreaker::new("test", 3, Duration::from_millis(30));
        breaker.failed(&"one");
        breaker.failed(&"two");
        assert_eq!(breaker.state(), BreakerState::Closed, "below the threshold");
        breaker.succeeded();
        breaker.failed(&"one");
        breaker.failed(&"two");
        assert!(breaker.allows(), "a success resets the count");
        breaker.failed(&"three");
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allows());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.allows(), "the probe");
        assert!(!breaker.allows(), "one probe at a time");
        breaker.succeeded();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.allows());
    }

    #[test]
    fn a_probed_breaker_waits_for_its_prober_however_long_it_has_been_open() {
        let breaker = CircuitBreaker::probed("test", 1);
        assert!(breaker.allows());
        assert!(breaker.failed(&"down"));
        assert!(!breaker.allows());
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.failed(&"still down"), "opened once");
        assert!(breaker.succeeded(), "the prober's success closes it");
        assert!(breaker.allows());
    }

    #[test]
    fn a_failed_probe_opens_it_again_at_once() {
        let breaker = CircuitBreaker::new("test", 2, Duration::from_millis(30));
        breaker.failed(&"a");
        breaker.failed(&"b");
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allows());
        breaker.failed(&"probe");
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allows());
    }
}
