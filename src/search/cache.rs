//! Search results cached in this process for up to an hour. Any change applied to the index
//! starts a new generation and makes every older entry stale, so a cached answer never shows a
//! product as it no longer is. Coarse, but correct: writes are rare next to searches.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

pub const TTL: Duration = Duration::from_secs(60 * 60);
/// Past this many entries the cache starts over rather than grow.
const CAPACITY: usize = 10_000;

pub struct ResultCache<V> {
    generation: AtomicU64,
    entries: Mutex<HashMap<String, (u64, Instant, V)>>,
}

impl<V: Clone> Default for ResultCache<V> {
    fn default() -> Self {
        Self { generation: AtomicU64::new(0), entries: Mutex::new(HashMap::new()) }
    }
}

impl<V: Clone> ResultCache<V> {
    /// Marks every cached result stale: the index changed.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn get(&self, key: &str) -> Option<V> {
        let generation = self.generation.load(Ordering::Acquire);
        let entries = self.entries.lock().expect("cache lock");
        let hit =
            entries.get(key).filter(|(g, at, _)| *g == generation && at.elapsed() < TTL).map(|(_, _, v)| v.clone());
        let outcome = if hit.is_some() { "hit" } else { "miss" };
        metrics::counter!("soko_search_cache_lookups_total", "outcome" => outcome).increment(1);
        hit
    }

    /// Stores a result computed while the index was at `generation` (read before computing, so a
    /// change that raced the computation leaves the entry stale rather than wrong).
    pub fn put(&self, key: String, generation: u64, value: V) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, (generation, Instant::now(), value));
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_go_stale_when_the_index_changes() {
        let cache = ResultCache::<u32>::default();
        cache.put("q".into(), cache.generation(), 7);
        assert_eq!(cache.get("q"), Some(7));
        cache.invalidate();
        assert_eq!(cache.get("q"), None);
        // A result computed before a change but stored after it is never served.
        let before = cache.generation();
        cache.invalidate();
        cache.put("q".into(), before, 8);
        assert_eq!(cache.get("q"), None);
    }
}
