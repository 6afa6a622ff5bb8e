//! Failed-login throttling with growing backoff, per account and per client IP.
//!
//! A few failures are free; after that each further failure doubles the wait before the next
//! attempt, up to a cap. Nothing is ever locked for good, so an attacker who guesses wrong can't
//! lock the real user out for longer than the cap, and a success clears the account's record.
//! Records live in this process; replicas each throttle on their own.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    /// Failures allowed before a wait is imposed: after this many, the next attempt waits.
    pub free_failures: u32,
    /// The first wait; each later failure doubles it.
    pub base: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    blocked_until: Instant,
    last_failure: Instant,
}

/// Records are forgotten this long after their last failure.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Bound on tracked keys, so a spray of distinct emails can't grow memory without limit.
const MAX_RECORDS: usize = 100_000;

pub struct LoginThrottle {
    records: Mutex<HashMap<String, Record>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self { records: Mutex::new(HashMap::new()) }
    }
}

impl LoginThrottle {
    /// `Err(wait)` when `key` must wait before its next attempt.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let records = self.records.lock().expect("throttle lock");
        match records.get(key) {
            Some(r) if r.blocked_until > now => Err(r.blocked_until - now),
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, key: &str, policy: BackoffPolicy) {
        let now = Instant::now();
        let mut records = self.records.lock().expect("throttle lock");
        if records.len() >= MAX_RECORDS {
            records.retain(|_, r| now.duration_since(r.last_failure) < FORGET_AFTER && r.blocked_until > now);
        }
        let record =
            records.entry(key.to_owned()).or_insert(Record { failures: 0, blocked_until: now, last_failure: now });
        if now.duration_since(record.last_failure) > FORGET_AFTER {
            record.failures = 0;
        }
        record.failures += 1;
        record.last_failure = now;
        // The failure that uses up the free ones already imposes the first wait.
        if let Some(over) = record.failures.checked_sub(policy.free_failures) {
            let wait = policy.base.saturating_mul(1u32 << over.min(20)).min(policy.max);
            record.blocked_until = now + wait;
        }
    }

    pub fn record_success(&self, key: &str) {
        self.records.lock().expect("throttle lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_after_free_failures_and_success_clears_it() {
        let policy = BackoffPolicy { free_failures: 2, base: Duration::from_secs(1), max: Duration::from_secs(8) };
        let t = LoginThrottle::default();
        t.record_failure("a", policy);
        assert!(t.check("a").is_ok());
        t.record_failure("a", policy);
        let wait = t.check("a").unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        for _ in 0..10 {
            t.record_failure("a", policy);
        }
        assert!(t.check("a").unwrap_err() <= Duration::from_secs(8), "capped");
        assert!(t.check("b").is_ok(), "keys are independent");
        t.record_success("a");
        assert!(t.check("a").is_ok());
    }
}
