//! Rate limiting with GCRA: in this process by default, shared across replicas through Redis when
//! `REDIS_URL` is set. A Redis that fails or is slow never fails a call: decisions fall back to
//! the local limiter at once, the fallback is reported in readiness and metrics, and Redis is
//! tried again a second later.

pub mod gcra;
mod local;
mod redis;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

pub use gcra::{BucketState, Rate};

use crate::configuration::RateLimitConfig;

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

/// After a Redis failure, decisions stay local this long before Redis is tried again.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct RateLimiter {
    local: local::LocalStore,
    redis: Option<redis::RedisStore>,
    degraded: AtomicBool,
    /// Local-clock microseconds before which Redis is not tried.
    redis_skip_until: AtomicI64,
    epoch: Instant,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> anyhow::Result<Arc<Self>> {
        let redis =
            config.redis_url.as_ref().map(|url| redis::RedisStore::new(&url.0, config.redis_timeout)).transpose()?;
        Ok(Arc::new(Self {
            local: local::LocalStore::default(),
            redis,
            degraded: AtomicBool::new(false),
            redis_skip_until: AtomicI64::new(0),
            epoch: Instant::now(),
        }))
    }

    fn now_us(&self) -> i64 {
        self.epoch.elapsed().as_micros() as i64
    }

    pub fn health(&self) -> LimiterHealth {
        LimiterHealth {
            configured: if self.redis.is_some() { Backend::Redis } else { Backend::Local },
            degraded: self.degraded.load(Ordering::Relaxed),
        }
    }

    /// Checks a call against all its buckets: it passes only if every bucket has room, and only
    /// then is it counted in each.
    pub async fn check(&self, buckets: &[Bucket]) -> Decision {
        if let Some(redis) = &self.redis
            && self.now_us() >= self.redis_skip_until.load(Ordering::Relaxed)
        {
            match redis.check(buckets).await {
                Ok(states) => {
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!("rate limiter: Redis is back; limits are shared again");
                        metrics::gauge!("soko_ratelimit_redis_degraded").set(0.0);
                    }
                    return combine(buckets, &states, Backend::Redis);
                }
                Err(e) => {
                    self.redis_skip_until
                        .store(self.now_us() + REDIS_RETRY_AFTER.as_micros() as i64, Ordering::Relaxed);
                    if !self.degraded.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "rate limiter: Redis failed; limiting locally until it returns");
                        metrics::gauge!("soko_ratelimit_redis_degraded").set(1.0);
                    }
                    metrics::counter!("soko_ratelimit_redis_errors_total").increment(1);
                }
            }
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
