//! The one Redis connection a process keeps, shared by everything that uses Redis (the rate
//! limiter, the search and product caches), and Redis's health as a background prober sees it.
//!
//! **A failing Redis stays off the request path.** The first call that fails (an error, or no
//! answer within `SOKO_REDIS_TIMEOUT_MS`) opens the link's circuit breaker; from then on every
//! call is refused at once with [`RedisError::Skipped`] and its user falls back to its
//! in-process state. Only the prober, once every [`PROBE_INTERVAL`], tries Redis again, so a
//! frozen Redis costs one user call a timeout, and then none, until it answers the prober and
//! the breaker closes. The state is exported as `soko_redis_degraded` and in readiness.

use std::{future::Future, sync::Mutex, time::Duration};

use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use tracing::Instrument;

use crate::breaker::CircuitBreaker;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis failed: {0}")]
    Failed(String),
    /// Not attempted: Redis is known to be failing (the breaker is open).
    #[error("Redis is failing; skipped until it answers the prober")]
    Skipped,
}

pub struct RedisLink {
    pool: bb8::Pool<RedisConnectionManager>,
    /// One multiplexed connection shared by every call: Redis pipelines them on one socket, where
    /// checking out a pooled connection per call would queue calls behind each other under load.
    /// Replaced from the pool when it fails.
    shared: Mutex<Option<MultiplexedConnection>>,
    timeout: Duration,
    breaker: CircuitBreaker,
}

/// How often the prober pings Redis: the longest a recovered Redis goes unused.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

impl RedisLink {
    /// Connects lazily: nothing is dialled until the first call.
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        Self::with_ca(url, timeout, None)
    }

    /// As [`RedisLink::new`]; a `rediss://` URL verifies Redis's certificate against the system
    /// roots, or against `ca_file` when Redis has a certificate from a private CA (managed Redis
    /// services and in-cluster CAs usually do).
    pub fn with_ca(url: &str, timeout: Duration, ca_file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let info = match ca_file {
            None => redis::IntoConnectionInfo::into_connection_info(url)?,
            Some(path) => {
                let root_cert = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) };
                redis::Client::build_with_tls(url, certificates)?.get_connection_info().clone()
            }
        };
        let manager = RedisConnectionManager::new(info)?;
        let pool = bb8::Pool::builder()
            .max_size(2)
            // A dead Redis must cost a call milliseconds, not bb8's default 30 s.
            .connection_timeout(timeout)
            .retry_connection(false)
            .build_unchecked(manager);
        Ok(Self { pool, shared: Mutex::new(None), timeout, breaker: CircuitBreaker::probed("redis", 1) })
    }

    /// Whether Redis is known to be failing: its users are on their fallbacks.
    pub fn degraded(&self) -> bool {
        self.breaker.degraded()
    }

    /// Runs `call` on the shared connection, within the timeout (connecting included), unless
    /// Redis is known to be failing: then it answers [`RedisError::Skipped`] at once.
    pub async fn run<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T, RedisError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.breaker.allows() {
            return Err(RedisError::Skipped);
        }
        let outcome = self.attempt(operation, call).await;
        if let Err(e) = &outcome {
            self.failed(e);
        }
        outcome
    }

    /// Pings Redis every [`PROBE_INTERVAL`] until `stop` resolves: the one caller that pays a
    /// timeout while Redis is failing, and the one that notices it has come back.
    pub async fn probe(self: std::sync::Arc<Self>, stop: impl Future<Output = ()>) {
        let mut ticks = crate::periodic::Ticks::new(PROBE_INTERVAL, stop);
        while ticks.next().await {
            let pinged = self
                .attempt("PING", |mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await })
                .await;
            match pinged {
                Ok(()) => {
                    if self.breaker.succeeded() {
                        tracing::info!("Redis answers again: rate limits and caches are shared again");
                        metrics::gauge!("soko_redis_degraded").set(0.0);
                    }
                }
                Err(e) => self.failed(&e),
            }
        }
    }

    fn failed(&self, error: &RedisError) {
        metrics::counter!("soko_redis_errors_total").increment(1);
        if self.breaker.failed(error) {
            tracing::warn!(error = %error, "Redis failed: rate limits and caches use this process's own until it answers");
            metrics::gauge!("soko_redis_degraded").set(1.0);
        }
    }

    async fn attempt<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T, RedisError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let span = tracing::info_span!("redis", otel.kind = "client", db.system = "redis", db.operation = operation);
        let run = async {
            let cached = self.shared.lock().expect("redis connection lock").clone();
            let conn = match cached {
                Some(conn) => conn,
                None => {
                    let conn = self.pool.dedicated_connection().await.map_err(|e| RedisError::Failed(e.to_string()))?;
                    *self.shared.lock().expect("redis connection lock") = Some(conn.clone());
                    conn
                }
            };
            call(conn).await.map_err(|e| RedisError::Failed(e.to_string()))
        };
        // After a failure the connection may be dead or wedged: the next call starts afresh.
        let outcome = match tokio::time::timeout(self.timeout, run).instrument(span).await {
            Ok(outcome) => outcome,
            Err(_) => Err(RedisError::Timeout(self.timeout)),
        };
        if outcome.is_err() {
            self.shared.lock().expect("redis connection lock").take();
        }
        outcome
    }
}
