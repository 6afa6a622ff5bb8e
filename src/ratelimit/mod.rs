//! Rate limiting with GCRA: in this process by default, shared across replicas through Redis when
//! `REDIS_URL` is set. A Redis that fails or is slow never fails a call: decisions fall back to
//! the local limiter at once, the fallback is reported in readiness and metrics, and Redis is
//! tried again a second later.

pub mod gcra;
mod local;
mod redis;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

pub use gcra::{BucketState, Rate};

use crate::redis_link::RedisLink;

/// One bucket a call counts against.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub key: String,
    pub rate: Rate,
}

/// The outcome of one call's check across its buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub retry_after: Duration,
    /// The most constraining bucket's quota and state, for the RateLimit headers.
    pub limit: u32,
    pub period: Duration,
    pub remaining: u32,
    pub reset: Duration,
    pub backend: Backend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    Redis,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Redis => "redis",
        }
    }
}

/// What readiness reports about the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterHealth {
    pub configured: Backend,
    /// Redis is configured but failing: decisions are local for now.
    pub degraded: bool,
}

pub struct RateLimiter {
    local: local::LocalStore,
    redis: Option<redis::RedisStore>,
    epoch: Instant,
}

impl RateLimiter {
    /// Shared limits through `redis` when given, local ones otherwise.
    pub fn new(redis: Option<Arc<RedisLink>>) -> Arc<Self> {
        Arc::new(Self {
            local: local::LocalStore::default(),
            redis: redis.map(redis::RedisStore::new),
            epoch: Instant::now(),
        })
    }

    fn now_us(&self) -> i64 {
        self.epoch.elapsed().as_micros() as i64
    }

    pub fn health(&self) -> LimiterHealth {
        LimiterHealth {
            configured: if self.redis.is_some() { Backend::Redis } else { Backend::Local },
            degraded: self.redis.as_ref().is_some_and(redis::RedisStore::degraded),
        }
    }

    /// Checks a call against all its buckets: it passes only if every bucket has room, and only
    /// then is it counted in each.
    pub async fn check(&self, buckets: &[Bucket]) -> Decision {
        // A failing Redis answers at once (the link's prober watches it): limits are then
        // local to this replica until it returns.
        if let Some(redis) = &self.redis
            && let Ok(states) = redis.check(buckets).await
        {
            return combine(buckets, &states, Backend::Redis);
        }
        let states = self.local.check(buckets, self.now_us());
        combine(buckets, &states, Backend::Local)
    }
}

fn combine(buckets: &[Bucket], states: &[BucketState], backend: Backend) -> Decision {
    let allowed = states.iter().all(|s| s.allowed);
    let retry_after = states.iter().map(|s| s.retry_after).max().unwrap_or_default();
    // The bucket with the least room is the one a client must pace itself by.
    let (bucket, state) =
        buckets.iter().zip(states).min_by_key(|(_, s)| (s.allowed, s.remaining)).expect("at least one bucket");
    Decision {
        allowed,
        retry_after,
        limit: bucket.rate.limit,
        period: bucket.rate.period,
        remaining: if allowed { state.remaining } else { 0 },
        reset: state.reset,
        backend,
    }
}
