//! Buckets in Redis, decided by one Lua script per call (one round trip, atomic across the
//! call's buckets, with Redis's clock so every replica agrees on time). Keys share a hash tag so
//! the script also runs on Redis Cluster.

use std::time::Duration;

use std::sync::Mutex;

use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;

use super::{Bucket, BucketState, gcra};

/// KEYS: the buckets. ARGV: interval and burst per bucket, in order.
/// Returns {allowed, now, tat_1 … tat_n}: the stored TATs after the decision.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local allowed = 1
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  if now < tat + interval - burst * interval then allowed = 0 end
end
local out = {allowed, now}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  if allowed == 1 then
    tats[i] = tats[i] + interval
    redis.call('SET', KEYS[i], tats[i], 'PX', math.ceil((tats[i] - now) / 1000) + 1000)
  end
  out[i + 2] = tats[i]
end
return out
";

pub struct RedisStore {
    pool: bb8::Pool<RedisConnectionManager>,
    /// One multiplexed connection shared by every call: Redis pipelines them on one socket, where
    /// checking out a pooled connection per call would queue calls behind each other under load.
    /// Replaced from the pool when it fails.
    shared: Mutex<Option<MultiplexedConnection>>,
    script: redis::Script,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis failed: {0}")]
    Failed(String),
}

impl RedisStore {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let manager = RedisConnectionManager::new(url)?;
        let pool = bb8::Pool::builder()
            .max_size(2)
            // A dead Redis must cost a call milliseconds, not bb8's default 30 s.
            .connection_timeout(timeout)
            .retry_connection(false)
            .build_unchecked(manager);
        Ok(Self { pool, shared: Mutex::new(None), script: redis::Script::new(SCRIPT), timeout })
    }

    pub async fn check(&self, buckets: &[Bucket]) -> Result<Vec<BucketState>, RedisError> {
        let run = async {
            let cached = self.shared.lock().expect("redis connection lock").clone();
            let mut conn = match cached {
                Some(conn) => conn,
                None => {
                    let conn = self.pool.dedicated_connection().await.map_err(|e| RedisError::Failed(e.to_string()))?;
                    *self.shared.lock().expect("redis connection lock") = Some(conn.clone());
                    conn
                }
            };
            let mut invocation = self.script.prepare_invoke();
            for bucket in buckets {
                invocation.key(&bucket.key).arg(bucket.rate.interval_us).arg(bucket.rate.burst);
            }
            invocation.invoke_async::<Vec<i64>>(&mut conn).await.map_err(|e| RedisError::Failed(e.to_string()))
        };
        // After a failure the connection may be dead or wedged: the next attempt starts afresh.
        let out = match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                self.shared.lock().expect("redis connection lock").take();
                return Err(e);
            }
            Err(_) => {
                self.shared.lock().expect("redis connection lock").take();
                return Err(RedisError::Timeout(self.timeout));
            }
        };
        let (allowed, now) = match out.as_slice() {
            [allowed, now, ..] if out.len() == buckets.len() + 2 => (*allowed == 1, *now),
            _ => {
                return Err(RedisError::Failed(format!("unexpected script reply {out:?}")));
            }
        };
        Ok(buckets
            .iter()
            .zip(&out[2..])
            .map(|(bucket, tat)| {
                if allowed {
                    gcra::state(bucket.rate, *tat, now, true)
                } else {
                    gcra::decide(bucket.rate, Some(*tat), now).0
                }
            })
            .collect())
    }
}
