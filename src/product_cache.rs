//! Product reads served from memory: GetProduct, BatchGetProducts and anonymous ListProducts
//! pages. Entries live in this process (bounded by `SOKO_PRODUCT_CACHE_ENTRIES`) and, when
//! `REDIS_URL` is set, in Redis for every replica (cache-aside, `SOKO_PRODUCT_CACHE_TTL_SECS`).
//!
//! **Only what anyone may read is cached**: live products in a public status. A hit therefore
//! needs no check of who is asking, and a draft never leaves the database path.
//!
//! **Values are wire messages without the embedding**: a hit is a clone of the `Product` that
//! goes out (Redis holds its protobuf encoding), with no SQL row to parse and no ids to format.
//! A read that asks for the embedding goes to the database.
//!
//! **Invalidation follows the outbox.** Every entry carries the version it was read at (the id of
//! the product's newest outbox event, see [`Version`]). The search index's outbox follower tells
//! this cache about each event it applies: the product's entry is dropped, and no entry of an
//! older version is stored or served again on this replica, whether it comes from a read that
//! raced the write or from a Redis entry another replica wrote before it saw the event. So once
//! a replica has applied a write, no cache shows that replica the product as it was. The replica
//! that made a write also forgets the entry at once (here and in Redis), so a seller reads their
//! own change on the next call.
//!
//! ListProducts pages change with any write, so they are cached per replica only, and dropped
//! together whenever an event is applied (a generation, as in the search cache).
//!
//! Redis never fails a read: its failures and its prober are the link's business (see
//! [`crate::redis_link`]), and a failed Redis read is a miss.
//!
//! `soko_product_cache_lookups_total{backend, outcome}` counts lookups: a hit in this process
//! (`local`) or in Redis (`redis`), or a miss labelled with the last place looked;
//! `soko_product_cache_entries` is this process's entry count.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use prost::Message;

use crate::{
    configuration::ProductCacheSettings,
    domain::product::ProductId,
    proto::catalog::{ListProductsResponse, Product},
    redis_link::RedisLink,
    store::catalog::Version,
};

/// Bumped when the value encoding changes, so replicas of two versions sharing a Redis during a
/// rollout never read each other's entries.
const KEY_VERSION: &str = "product:v1:";
/// Pages kept before the page cache starts over.
const PAGE_CAPACITY: usize = 2_000;
/// How long an applied event is remembered past the TTL: the longest a read that raced it could
/// take to store what it read.
const RACE_WINDOW: Duration = Duration::from_secs(60);

pub struct ProductCache {
    settings: ProductCacheSettings,
    local: RwLock<Local>,
    pages: Pages,
    redis: Option<(Arc<RedisLink>, String)>,
}

#[derive(Default)]
struct Local {
    entries: HashMap<ProductId, Entry>,
    /// The newest event applied for each product written lately, and when: entries of older
    /// versions are refused.
    applied: HashMap<ProductId, (Version, Instant)>,
}

struct Entry {
    version: Version,
    stored: Instant,
    product: Arc<Product>,
}

/// A page and the generation and time it was stored at.
type PageEntry = (u64, Instant, Arc<ListProductsResponse>);

#[derive(Default)]
struct Pages {
    generation: AtomicU64,
    entries: Mutex<HashMap<Vec<u8>, PageEntry>>,
}

impl Local {
    fn fresh(&self, id: &ProductId, version: Version) -> bool {
        self.applied.get(id).is_none_or(|(applied, _)| *applied <= version)
    }
}

impl ProductCache {
    /// `redis`: the link and the key prefix (`SOKO_REDIS_KEY_PREFIX`) to share entries through.
    pub fn new(settings: ProductCacheSettings, redis: Option<(Arc<RedisLink>, String)>) -> Self {
        Self { settings, local: RwLock::default(), pages: Pages::default(), redis }
    }

    fn enabled(&self) -> bool {
        self.settings.entries > 0
    }

    /// The cached product, if any replica has cached it at a version this one has not seen
    /// superseded.
    pub async fn get(&self, id: ProductId) -> Option<Arc<Product>> {
        self.get_many(&[id]).await.pop().flatten()
    }

    /// [`Self::get`] for several products: one Redis round trip for those not held here.
    pub async fn get_many(&self, ids: &[ProductId]) -> Vec<Option<Arc<Product>>> {
        if !self.enabled() {
            return vec![None; ids.len()];
        }
        let mut found: Vec<Option<Arc<Product>>> = {
            let local = self.local.read().expect("product cache lock");
            ids.iter()
                .map(|id| {
                    local
                        .entries
                        .get(id)
                        .filter(|e| e.stored.elapsed() < self.settings.ttl)
                        .map(|e| Arc::clone(&e.product))
                })
                .collect()
        };
        let missing: Vec<usize> = (0..ids.len()).filter(|&i| found[i].is_none()).collect();
        record("local", "hit", ids.len() - missing.len());
        let Some((link, prefix)) = self.redis.as_ref().filter(|_| !missing.is_empty()) else {
            record("local", "miss", missing.len());
            return found;
        };
        let keys: Vec<String> = missing.iter().map(|&i| redis_key(prefix, &ids[i])).collect();
        let fetched = link
            .run("MGET", |mut conn| async move {
                redis::cmd("MGET").arg(&keys).query_async::<Vec<Option<Vec<u8>>>>(&mut conn).await
            })
            .await;
        let Ok(values) = fetched.map(|v| if v.len() == missing.len() { v } else { vec![None; missing.len()] }) else {
            record("local", "miss", missing.len());
            return found;
        };
        let mut local = self.local.write().expect("product cache lock");
        let mut hits = 0;
        for (&i, value) in missing.iter().zip(values) {
            let Some((version, product)) = value.as_deref().and_then(decode) else { continue };
            if !local.fresh(&ids[i], version) {
                continue;
            }
            let product = Arc::new(product);
            self.insert(&mut local, ids[i], version, Arc::clone(&product));
            found[i] = Some(product);
            hits += 1;
        }
        record("redis", "hit", hits);
        record("redis", "miss", missing.len() - hits);
        found
    }

    /// Stores products read from the database at `version`s, unless an event of theirs newer
    /// than that has been applied meanwhile. Call only with products anyone may read, without
    /// their embedding.
    pub async fn put_many(&self, products: Vec<(ProductId, Version, Product)>) {
        if !self.enabled() || products.is_empty() {
            return;
        }
        let mut shared = Vec::with_capacity(products.len());
        {
            let mut local = self.local.write().expect("product cache lock");
            for (id, version, product) in products {
                if !local.fresh(&id, version) {
                    continue;
                }
                if self.redis.is_some() {
                    shared.push((id, encode(version, &product)));
                }
                self.insert(&mut local, id, version, Arc::new(product));
            }
        }
        let Some((link, prefix)) = self.redis.as_ref().filter(|_| !shared.is_empty()) else { return };
        let ttl_ms = self.settings.ttl.as_millis() as u64;
        // A failed store costs nothing more: the entries are still held here.
        let _ = link
            .run("SET", |mut conn| async move {
                let mut pipe = redis::pipe();
                for (id, bytes) in &shared {
                    pipe.cmd("SET").arg(redis_key(prefix, id)).arg(bytes.as_slice()).arg("PX").arg(ttl_ms).ignore();
                }
                pipe.query_async::<()>(&mut conn).await
            })
            .await;
    }

    fn insert(&self, local: &mut Local, id: ProductId, version: Version, product: Arc<Product>) {
        if local.entries.len() >= self.settings.entries && !local.entries.contains_key(&id) {
            // Full: drop the expired entries, or an eighth of all if none has expired. Which
            // eighth is arbitrary; a cache this full is undersized, and the metric says so.
            let ttl = self.settings.ttl;
            local.entries.retain(|_, e| e.stored.elapsed() < ttl);
            if local.entries.len() >= self.settings.entries {
                let mut n = 0usize;
                local.entries.retain(|_, _| {
                    n += 1;
                    !n.is_multiple_of(8)
                });
            }
            metrics::counter!("soko_product_cache_evictions_total").increment(1);
        }
        local.entries.insert(id, Entry { version, stored: Instant::now(), product });
        metrics::gauge!("soko_product_cache_entries").set(local.entries.len() as f64);
    }

    /// The outbox follower applied these events: their products' entries, and every cached
    /// page, are stale on this replica from now on.
    pub fn applied(&self, events: &[(ProductId, Version)]) {
        if !self.enabled() || events.is_empty() {
            return;
        }
        self.pages.generation.fetch_add(1, Ordering::AcqRel);
        let now = Instant::now();
        let mut local = self.local.write().expect("product cache lock");
        for &(id, version) in events {
            if local.entries.get(&id).is_some_and(|e| e.version < version) {
                local.entries.remove(&id);
            }
            let newest = local.applied.get(&id).map_or(version, |(v, _)| (*v).max(version));
            local.applied.insert(id, (newest, now));
        }
        // Remembered only as long as an older entry could still turn up (from Redis, or a slow
        // read): the applied list stays the size of the recent writes.
        if local.applied.len() > self.settings.entries.max(1024) {
            let keep = self.settings.ttl + RACE_WINDOW;
            local.applied.retain(|_, (_, at)| at.elapsed() < keep);
        }
        metrics::gauge!("soko_product_cache_entries").set(local.entries.len() as f64);
    }

    /// Drops everything held in this process (Redis entries age out by their TTL): after a
    /// reindex, which picks up changes made behind the outbox's back.
    pub fn clear(&self) {
        self.pages.generation.fetch_add(1, Ordering::AcqRel);
        self.local.write().expect("product cache lock").entries.clear();
        metrics::gauge!("soko_product_cache_entries").set(0.0);
    }

    /// This replica just changed the product: drop it here and in Redis, so the writer's next
    /// read goes to the database rather than waiting for the follower.
    pub async fn forget(&self, id: ProductId) {
        if !self.enabled() {
            return;
        }
        self.pages.generation.fetch_add(1, Ordering::AcqRel);
        self.local.write().expect("product cache lock").entries.remove(&id);
        if let Some((link, prefix)) = &self.redis {
            let key = redis_key(prefix, &id);
            let _ = link
                .run("DEL", |mut conn| async move { redis::cmd("DEL").arg(&key).query_async::<()>(&mut conn).await })
                .await;
        }
    }

    /// The page generation a page computed from now on is stored under (read it before the
    /// database, so a write that races the read leaves the page unstored).
    pub fn page_generation(&self) -> u64 {
        self.pages.generation.load(Ordering::Acquire)
    }

    /// A cached page for this request (its protobuf encoding, read mask cleared).
    pub fn page(&self, key: &[u8]) -> Option<Arc<ListProductsResponse>> {
        if !self.enabled() {
            return None;
        }
        let generation = self.page_generation();
        let pages = self.pages.entries.lock().expect("page cache lock");
        let hit = pages
            .get(key)
            .filter(|(g, at, _)| *g == generation && at.elapsed() < self.settings.ttl)
            .map(|(_, _, page)| Arc::clone(page));
        record("page", if hit.is_some() { "hit" } else { "miss" }, 1);
        hit
    }

    pub fn put_page(&self, key: Vec<u8>, generation: u64, page: ListProductsResponse) {
        if !self.enabled() || generation != self.page_generation() {
            return;
        }
        let mut pages = self.pages.entries.lock().expect("page cache lock");
        if pages.len() >= PAGE_CAPACITY {
            pages.clear();
        }
        pages.insert(key, (generation, Instant::now(), Arc::new(page)));
    }
}

fn record(backend: &'static str, outcome: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("soko_product_cache_lookups_total", "backend" => backend, "outcome" => outcome)
            .increment(n as u64);
    }
}

fn redis_key(prefix: &str, id: &ProductId) -> String {
    format!("{prefix}:{KEY_VERSION}{}", id.0)
}

/// `[version: i64 LE][Product, protobuf]`.
fn encode(version: Version, product: &Product) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + product.encoded_len());
    out.extend_from_slice(&version.0.to_le_bytes());
    product.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// `None` for anything [`encode`] could not have written.
fn decode(bytes: &[u8]) -> Option<(Version, Product)> {
    let (version, rest) = bytes.split_first_chunk::<8>()?;
    Some((Version(i64::from_le_bytes(*version)), Product::decode(rest).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: usize) -> ProductCache {
        ProductCache::new(ProductCacheSettings { entries, ttl: Duration::from_secs(60) }, None)
    }

    fn product(name: &str) -> Product {
        Product { name: name.into(), ..Product::default() }
    }

    #[tokio::test]
    async fn an_applied_event_drops_older_entries_and_refuses_older_reads() {
        let cache = cache(10);
        let id = ProductId::generate();
        cache.put_many(vec![(id, Version(3), product("old"))]).await;
        assert_eq!(cache.get(id).await.unwrap().name, "old");
        cache.applied(&[(id, Version(5))]);
        assert!(cache.get(id).await.is_none(), "dropped");
        // A read that raced the write finishes after the event was applied: not stored.
        cache.put_many(vec![(id, Version(3), product("raced"))]).await;
        assert!(cache.get(id).await.is_none());
        cache.put_many(vec![(id, Version(5), product("new"))]).await;
        assert_eq!(cache.get(id).await.unwrap().name, "new");
        // An event this entry already includes leaves it alone.
        cache.applied(&[(id, Version(5))]);
        assert_eq!(cache.get(id).await.unwrap().name, "new");
    }

    #[tokio::test]
    async fn a_full_cache_stays_within_its_bound_and_zero_entries_caches_nothing() {
        let cache = cache(16);
        for _ in 0..100 {
            cache.put_many(vec![(ProductId::generate(), Version(1), product("p"))]).await;
            assert!(cache.local.read().unwrap().entries.len() <= 16);
        }
        let off = super::ProductCache::new(ProductCacheSettings { entries: 0, ttl: Duration::from_secs(60) }, None);
        let id = ProductId::generate();
        off.put_many(vec![(id, Version(1), product("p"))]).await;
        assert!(off.get(id).await.is_none());
        off.put_page(b"k".to_vec(), off.page_generation(), ListProductsResponse::default());
        assert!(off.page(b"k").is_none());
    }

    #[test]
    fn pages_computed_before_a_write_are_never_stored_or_served_after_it() {
        let cache = cache(10);
        let before = cache.page_generation();
        cache.put_page(
            b"k".to_vec(),
            before,
            ListProductsResponse { next_page_token: "t".into(), ..Default::default() },
        );
        assert_eq!(cache.page(b"k").unwrap().next_page_token, "t");
        cache.applied(&[(ProductId::generate(), Version(9))]);
        assert!(cache.page(b"k").is_none());
        cache.put_page(b"k".to_vec(), before, ListProductsResponse::default());
        assert!(cache.page(b"k").is_none(), "computed before the write");
    }

    #[test]
    fn values_survive_encoding_and_garbage_is_refused() {
        let p = Product {
            id: "x".into(),
            name: "Kikoy".into(),
            image_urls: vec!["https://a/b.webp".into()],
            ..Default::default()
        };
        assert_eq!(decode(&encode(Version(42), &p)), Some((Version(42), p)));
        assert_eq!(decode(&[1, 2, 3]), None);
        assert_eq!(decode(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff]), None);
    }
}
