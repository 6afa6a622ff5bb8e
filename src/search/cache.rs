//! Search results cached for a while (an hour by default, `SOKO_SEARCH_CACHE_TTL_SECS`), in this
//! process and, when `REDIS_URL` is set, in Redis for every replica.
//!
//! **Invalidation is by index position.** A key hashes the whole normalized request together
//! with the index's position in the catalog outbox (the watermark and any ids applied above it)
//! and the settings that shape results (dimension, HNSW parameters). Any catalog write adds an
//! outbox event, so once a replica applies it every later search uses new keys and older entries
//! are never read again; they expire by TTL. Replicas that have applied the same outbox prefix
//! have indexed the same writes, so they share entries. This invalidates at index granularity
//! (one product changing invalidates every query), a choice made because writes are rare next
//! to searches and working out which queries a write could change is where caches go stale.
//!
//! **Values are product ids and scores**, not products: a hit re-reads the products from this
//! replica's own index, so an entry never shows a product as it was, and an entry naming a
//! product this replica has not indexed (or no longer has) counts as a miss.
//!
//! **Redis never fails a search.** A Redis error or a reply slower than `SOKO_REDIS_TIMEOUT_MS`
//! falls back to the in-process cache; Redis is then left alone until its prober sees it answer
//! (see [`crate::redis_link`]). The in-process cache also keeps its own generation, bumped on
//! every index change, so its stale entries are dropped rather than left to age out.
//!
//! `soko_search_cache_lookups_total{backend, outcome}` counts each lookup once: a hit in this
//! process (`local`), a hit in Redis (`redis`), or a miss labelled with the last place looked.
//! The hit ratio is `sum(hit) / sum(hit + miss)`.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use crate::{domain::product::ProductId, redis_link::RedisLink};

/// Past this many entries the in-process cache starts over rather than grow.
const CAPACITY: usize = 10_000;
/// Bumped when the key material or the value encoding changes, so replicas of two versions
/// sharing a Redis during a rollout never read each other's entries.
const KEY_VERSION: &str = "search:v1:";

/// What a cached search keeps: the page's product ids with their scores, best first, and the
/// next page token of a paged search.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    pub hits: Vec<(ProductId, f32)>,
    pub next: Option<String>,
}

/// A cache key: a hex digest of the request and the index position.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

/// Builds a [`Key`]: every part is length-prefixed, so two different part lists never hash the
/// same bytes.
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    /// `salt` names the settings that shape results; `position` is the index's outbox position.
    pub fn new(salt: &[u8; 32], position: &[u8; 32], rpc: &str) -> Self {
        Self(Sha256::new().chain_update(salt).chain_update(position)).part(rpc.as_bytes())
    }

    pub fn part(mut self, bytes: &[u8]) -> Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(self) -> Key {
        // 128 bits: collisions stay out of reach at any realistic number of entries.
        Key(self.0.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Digest of a value that keys depend on (index position, result-shaping settings).
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Which Redis to share entries through.
pub struct Shared {
    pub link: Arc<RedisLink>,
    /// `SOKO_REDIS_KEY_PREFIX`; entries are stored under `<prefix>:search:v1:<key>`.
    pub key_prefix: String,
}

pub struct SearchCache {
    ttl: Duration,
    local: LocalCache,
    redis: Option<Shared>,
}

/// What readiness reports about the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheHealth {
    pub enabled: bool,
    pub shared: bool,
    /// Redis is configured but failing: only this process's cache is used for now.
    pub degraded: bool,
}

impl SearchCache {
    /// A zero `ttl` turns caching off.
    pub fn new(ttl: Duration, redis: Option<Shared>) -> Self {
        Self { ttl, local: LocalCache::default(), redis }
    }

    pub fn health(&self) -> CacheHealth {
        CacheHealth {
            enabled: !self.ttl.is_zero(),
            shared: self.redis.is_some(),
            degraded: self.redis.as_ref().is_some_and(|r| r.link.degraded()),
        }
    }

    /// The state an entry computed from now on must be stored under (see [`Self::put`]).
    pub fn generation(&self) -> u64 {
        self.local.generation.load(Ordering::Acquire)
    }

    /// Marks every in-process entry stale: the index changed.
    pub fn invalidate(&self) {
        self.local.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The cached result for `key`, if there is one `usable` accepts (it turns ids back into
    /// products and refuses an entry naming one this replica lacks).
    pub async fn get<T>(&self, key: &Key, usable: impl Fn(&Cached) -> Option<T>) -> Option<T> {
        if self.ttl.is_zero() {
            return None;
        }
        if let Some(found) = self.local.get(key, self.ttl).and_then(|c| usable(&c)) {
            record("local", "hit");
            return Some(found);
        }
        let Some(shared) = self.redis.as_ref() else {
            record("local", "miss");
            return None;
        };
        let redis_key = redis_key(&shared.key_prefix, key);
        let fetched = shared
            .link
            .run("GET", |mut conn| async move {
                redis::cmd("GET").arg(&redis_key).query_async::<Option<Vec<u8>>>(&mut conn).await
            })
            .await;
        let Ok(found) = fetched.map(|bytes| bytes.and_then(|b| decode(&b))) else {
            record("local", "miss");
            return None;
        };
        match found.as_ref().and_then(&usable) {
            Some(hit) => {
                record("redis", "hit");
                // Read in this process from now on; the generation is the current one, as the key
                // names the index position the entry was computed at.
                self.local.put(key.clone(), self.generation(), found.expect("decoded above"));
                Some(hit)
            }
            None => {
                record("redis", "miss");
                None
            }
        }
    }

    /// Stores a result computed while the in-process cache was at `generation` (read before
    /// computing, so a change that raced the computation leaves the entry stale rather than wrong).
    pub async fn put(&self, key: Key, generation: u64, value: Cached) {
        if self.ttl.is_zero() {
            return;
        }
        if let Some(shared) = &self.redis {
            let (redis_key, bytes, ttl_ms) =
                (redis_key(&shared.key_prefix, &key), encode(&value), self.ttl.as_millis());
            // A failed store costs nothing more: the entry is still kept in this process.
            let _ = shared
                .link
                .run("SET", |mut conn| async move {
                    redis::cmd("SET")
                        .arg(&redis_key)
                        .arg(bytes)
                        .arg("PX")
                        .arg(ttl_ms as u64)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
        }
        self.local.put(key, generation, value);
    }
}

fn record(backend: &'static str, outcome: &'static str) {
    metrics::counter!("soko_search_cache_lookups_total", "backend" => backend, "outcome" => outcome).increment(1);
}

fn redis_key(prefix: &str, key: &Key) -> String {
    format!("{prefix}:{KEY_VERSION}{}", key.0)
}

#[derive(Default)]
struct LocalCache {
    generation: AtomicU64,
    entries: Mutex<HashMap<Key, (u64, Instant, Cached)>>,
}

impl LocalCache {
    fn get(&self, key: &Key, ttl: Duration) -> Option<Cached> {
        let generation = self.generation.load(Ordering::Acquire);
        let entries = self.entries.lock().expect("cache lock");
        entries.get(key).filter(|(g, at, _)| *g == generation && at.elapsed() < ttl).map(|(_, _, v)| v.clone())
    }

    fn put(&self, key: Key, generation: u64, value: Cached) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, (generation, Instant::now(), value));
    }
}

/// `[token length: u32 LE][token][(id: 16 bytes, score: f32 LE) …]`: 20 bytes a hit, where
/// JSON would take about 60. A missing token and an empty one are the same to clients.
fn encode(value: &Cached) -> Vec<u8> {
    let next = value.next.as_deref().unwrap_or_default().as_bytes();
    let mut out = Vec::with_capacity(4 + next.len() + value.hits.len() * 20);
    out.extend_from_slice(&(next.len() as u32).to_le_bytes());
    out.extend_from_slice(next);
    for (id, score) in &value.hits {
        out.extend_from_slice(id.0.as_bytes());
        out.extend_from_slice(&score.to_le_bytes());
    }
    out
}

/// `None` for anything [`encode`] could not have written (a truncated or foreign value).
fn decode(bytes: &[u8]) -> Option<Cached> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return None;
    }
    let (next, hits) = rest.split_at(len);
    let next = std::str::from_utf8(next).ok()?;
    if !hits.len().is_multiple_of(20) {
        return None;
    }
    let hits = hits
        .chunks_exact(20)
        .map(|chunk| {
            let (id, score) = chunk.split_at(16);
            let id = uuid::Uuid::from_slice(id).expect("16 bytes");
            (ProductId(id), f32::from_le_bytes(score.try_into().expect("4 bytes")))
        })
        .collect();
    Some(Cached { hits, next: (!next.is_empty()).then(|| next.to_owned()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        KeyBuilder::new(&[0; 32], &[0; 32], "test").part(name.as_bytes()).finish()
    }

    fn value(score: f32) -> Cached {
        Cached { hits: vec![(ProductId::generate(), score)], next: None }
    }

    #[tokio::test]
    async fn entries_go_stale_when_the_index_changes() {
        let cache = SearchCache::new(Duration::from_secs(60), None);
        let same = |c: &Cached| Some(c.clone());
        let seven = value(7.0);
        cache.put(key("q"), cache.generation(), seven.clone()).await;
        assert_eq!(cache.get(&key("q"), same).await, Some(seven));
        cache.invalidate();
        assert_eq!(cache.get(&key("q"), same).await, None);
        // A result computed before a change but stored after it is never served.
        let before = cache.generation();
        cache.invalidate();
        cache.put(key("q"), before, value(8.0)).await;
        assert_eq!(cache.get(&key("q"), same).await, None);
    }

    #[tokio::test]
    async fn an_entry_the_caller_cannot_use_is_a_miss_and_a_zero_ttl_caches_nothing() {
        let cache = SearchCache::new(Duration::from_secs(60), None);
        cache.put(key("q"), cache.generation(), value(1.0)).await;
        assert_eq!(cache.get(&key("q"), |_| None::<()>).await, None);
        let off = SearchCache::new(Duration::ZERO, None);
        off.put(key("q"), off.generation(), value(1.0)).await;
        assert_eq!(off.get(&key("q"), |c| Some(c.clone())).await, None);
    }

    #[test]
    fn values_survive_encoding_and_garbage_is_refused() {
        let value = Cached {
            hits: vec![(ProductId::generate(), 0.5), (ProductId::generate(), -1.25)],
            next: Some("token".into()),
        };
        assert_eq!(decode(&encode(&value)), Some(value.clone()));
        let empty = Cached { hits: vec![], next: None };
        assert_eq!(decode(&encode(&empty)), Some(empty));
        let bytes = encode(&value);
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode(&[1, 2]), None);
        assert_eq!(decode(&[9, 0, 0, 0, b'a']), None);
    }

    #[test]
    fn every_part_and_its_boundaries_change_the_key() {
        let base = || KeyBuilder::new(&[0; 32], &[0; 32], "search");
        assert_eq!(base().part(b"ab").finish(), base().part(b"ab").finish());
        assert_ne!(base().part(b"ab").finish(), base().part(b"a").part(b"b").finish());
        assert_ne!(base().finish(), KeyBuilder::new(&[0; 32], &[1; 32], "search").finish(), "index position");
        assert_ne!(base().finish(), KeyBuilder::new(&[1; 32], &[0; 32], "search").finish(), "settings");
        assert_ne!(base().finish(), KeyBuilder::new(&[0; 32], &[0; 32], "hybrid").finish(), "rpc");
    }
}
