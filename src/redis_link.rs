//! The one Redis connection a process keeps, shared by everything that uses Redis (the rate
//! limiter, the search cache), and the breaker each user keeps so a failing Redis costs it one
//! timeout a second rather than one per call.

use std::{sync::Mutex, time::Duration};

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
}

pub struct RedisLink {
    pool: bb8::Pool<RedisConnectionManager>,
    /// One multiplexed connection shared by every call: Redis pipelines them on one socket, where
    /// checking out a pooled connection per call would queue calls behind each other under load.
    /// Replaced from the pool when it fails.
    shared: Mutex<Option<MultiplexedConnection>>,
    timeout: Duration,
}

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
        Ok(Self { pool, shared: Mutex::new(None), timeout })
    }

    /// Runs `call` on the shared connection, within the timeout (connecting included).
    pub async fn run<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T, RedisError>
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

/// After a Redis failure, a user does without Redis this long before trying it again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The breaker one user of Redis keeps: one failure opens it, so a failing Redis costs that
/// user one timeout per [`RETRY_AFTER`] rather than one per call.
pub fn breaker(user: &'static str) -> CircuitBreaker {
    CircuitBreaker::new(user, 1, RETRY_AFTER)
}
