//! Buckets in Redis, decided by one Lua script per call (one round trip, atomic across the
//! call's buckets, with Redis's clock so every replica agrees on time). Keys share a hash tag so
//! the script also runs on Redis Cluster.

use std::sync::Arc;

use super::{Bucket, BucketState, gcra};
use crate::redis_link::{RedisError, RedisLink};

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
    link: Arc<RedisLink>,
    script: redis::Script,
}

impl RedisStore {
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self { link, script: redis::Script::new(SCRIPT) }
    }

    pub fn degraded(&self) -> bool {
        self.link.degraded()
    }

    pub async fn check(&self, buckets: &[Bucket]) -> Result<Vec<BucketState>, RedisError> {
        let out = self
            .link
            .run("EVALSHA", |mut conn| async move {
                let mut invocation = self.script.prepare_invoke();
                for bucket in buckets {
                    invocation.key(&bucket.key).arg(bucket.rate.interval_us).arg(bucket.rate.burst);
                }
                invocation.invoke_async::<Vec<i64>>(&mut conn).await
            })
            .await?;
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
