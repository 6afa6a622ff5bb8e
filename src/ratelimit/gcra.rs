//! The Generic Cell Rate Algorithm, shared by the local and the Redis limiter so both answer
//! alike. Each bucket stores one number, its theoretical arrival time (TAT): a call is allowed
//! when it arrives no earlier than `TAT - burst × interval`, and then pushes TAT on by one
//! interval. Calls are spread smoothly; there are no window edges to burst across.

use std::time::Duration;

use crate::configuration::Quota;

/// A quota in the units the algorithm uses (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Time between calls at the sustained rate.
    pub interval_us: i64,
    pub burst: i64,
    pub limit: u32,
    pub period: Duration,
}

impl From<Quota> for Rate {
    fn from(q: Quota) -> Self {
        let interval_us = (q.period.as_micros() as i64 / i64::from(q.limit)).max(1);
        Self { interval_us, burst: i64::from(q.burst), limit: q.limit, period: q.period }
    }
}

/// The state of one bucket after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    pub allowed: bool,
    /// How long until a call would be allowed (zero when allowed).
    pub retry_after: Duration,
    /// Calls that could still be made right now.
    pub remaining: u32,
    /// How long until the bucket is full again.
    pub reset: Duration,
}

/// Decides one call against a bucket whose stored TAT is `tat` (None: never used). Returns the
/// decision and the TAT to store (unchanged when refused).
pub fn decide(rate: Rate, tat: Option<i64>, now: i64) -> (BucketState, i64) {
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + rate.interval_us;
    let allow_at = new_tat - rate.burst * rate.interval_us;
    if now < allow_at {
        let state = state(rate, tat, now, false);
        (BucketState { retry_after: micros(allow_at - now), ..state }, tat)
    } else {
        (state(rate, new_tat, now, true), new_tat)
    }
}

/// The headers' view of a bucket whose TAT is `tat` after the decision.
pub fn state(rate: Rate, tat: i64, now: i64, allowed: bool) -> BucketState {
    let headroom = now + rate.burst * rate.interval_us - tat;
    let remaining = (headroom / rate.interval_us).clamp(0, i64::from(u32::MAX)) as u32;
    BucketState { allowed, retry_after: Duration::ZERO, remaining, reset: micros((tat - now).max(0)) }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let rate = Rate::from("60/min,burst=3".parse::<Quota>().unwrap());
        assert_eq!(rate.interval_us, 1_000_000);
        let mut tat = None;
        let mut now = 0;
        for remaining in [2, 1, 0] {
            let (s, t) = decide(rate, tat, now);
            assert!(s.allowed);
            assert_eq!(s.remaining, remaining);
            tat = Some(t);
        }
        let (s, t) = decide(rate, tat, now);
        assert!(!s.allowed);
        assert_eq!(s.retry_after, Duration::from_secs(1));
        assert_eq!(Some(t), tat, "a refusal doesn't consume");
        now += 1_000_000;
        assert!(decide(rate, tat, now).0.allowed, "one interval later one call passes");
    }

    #[test]
    fn sustained_rate_matches_the_quota() {
        let rate = Rate::from("100/min".parse::<Quota>().unwrap());
        let mut tat = None;
        let mut admitted = 0;
        // Twice the allowed rate for ten minutes.
        let step = rate.interval_us / 2;
        for i in 0..(2 * 100 * 10) {
            let (s, t) = decide(rate, tat, i * step);
            if s.allowed {
                admitted += 1;
            }
            tat = Some(t);
        }
        let allowed = 100 + 100 * 10; // the burst, then the sustained rate
        let ratio = f64::from(admitted) / f64::from(allowed);
        assert!((0.98..=1.02).contains(&ratio), "{admitted}/{allowed}");
    }
}
