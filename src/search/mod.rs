//! Product search. The index lives in this process and is fed only by the catalog outbox, in id
//! order, so every replica converges on the database: a product written through any replica
//! appears here within one poll interval.

mod by_image;
pub mod cache;
pub mod distance;
mod graph;
pub mod snapshot;
pub mod synthetic;
pub mod text;
pub mod vector;

pub use by_image::ImageRequest;

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use cache::{Cached, Key, KeyBuilder, SearchCache};
use snapshot::SnapshotConfig;
use text::{Hit, TextIndex};
use vector::{HnswParams, VectorHit, VectorIndex};

use crate::{
    domain::{
        Error,
        error::Violations,
        listing::{self, FilterInput, ProductFilter, scope_digest},
        product::{Product, ProductId, ProductStatus},
    },
    store::{Db, StoreError},
};

/// How often the follower looks for new outbox events.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Outbox ids are allocated when a transaction inserts, not when it commits, so a lower id can
/// become visible after a higher one. A hole in the ids is waited for this long before it is
/// taken to be a rolled-back transaction and skipped.
const GAP_TIMEOUT: Duration = Duration::from_secs(10);
const BATCH: i64 = 500;
pub const QUERY_MAX_CHARS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchSort {
    Relevance,
    PriceAsc,
    PriceDesc,
    Newest,
}

/// A vector query as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct VectorRequest {
    pub vector: Vec<f32>,
    pub top_k: i32,
    pub filter: FilterInput,
}

/// Reciprocal-rank fusion constant (the value from the original RRF paper) and how many results
/// of each list take part.
const RRF_K: f32 = 60.0;
const RRF_DEPTH: usize = 100;

pub const DEFAULT_TOP_K: usize = 10;
pub const MAX_TOP_K: usize = 100;

/// Validates a filter; search only ever shows active products, so a status other than ACTIVE is
/// refused rather than silently ignored.
fn parse_filter(v: &mut Violations, input: &FilterInput) -> ProductFilter {
    let mut filter = listing::parse_filter(v, input);
    filter.status = match filter.status {
        None | Some(ProductStatus::Active) => Some(ProductStatus::Active),
        Some(_) => v.check("filter.status", Err("search covers active products only".into())),
    };
    filter
}

/// A query vector: exactly `dim` finite values, not all zero.
fn check_vector(v: &mut Violations, vector: &[f32], dim: usize) {
    let verdict = if vector.is_empty() {
        Err(format!("is required ({dim} values)"))
    } else if let Err(why) = crate::domain::product::parse_embedding(vector, dim) {
        Err(why)
    } else if vector::normalized(vector).is_none() {
        Err("must not be all zeros".into())
    } else {
        Ok(())
    };
    v.check("vector", verdict);
}

fn parse_top_k(v: &mut Violations, top_k: i32) -> usize {
    match top_k {
        0 => DEFAULT_TOP_K,
        k if (1..=MAX_TOP_K as i32).contains(&k) => k as usize,
        _ => v.check("top_k", Err(format!("must be 1–{MAX_TOP_K} (0 means {DEFAULT_TOP_K})"))).unwrap_or(DEFAULT_TOP_K),
    }
}

/// A search request as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub query: String,
    pub filter: FilterInput,
    pub sort: Option<SearchSort>,
    pub page_size: i32,
    pub page_token: String,
}

/// The search index and the state of its outbox follower.
pub struct SearchEngine {
    db: Db,
    cache: SearchCache,
    /// Digest of the outbox position the index has reached (the watermark and the ids applied
    /// above it), published after the index changes: part of every cache key.
    position: std::sync::Mutex<[u8; 32]>,
    /// Digest of the settings that shape results, so replicas configured differently never
    /// share cache entries.
    salt: [u8; 32],
    text: RwLock<TextIndex>,
    vectors: RwLock<VectorIndex>,
    follow: tokio::sync::Mutex<FollowState>,
    ready: std::sync::atomic::AtomicBool,
    snapshots: Option<SnapshotConfig>,
}

#[derive(Default)]
struct FollowState {
    /// Every event with an id up to here has been applied.
    watermark: i64,
    /// Applied events above the watermark, waiting for the holes below them to fill.
    applied_above: BTreeSet<i64>,
    gap_since: Option<Instant>,
    /// Set when the vector index came from a snapshot: the text index is then loaded from the
    /// products table before the outbox past the watermark is replayed.
    load_text: bool,
    /// Events applied since the last snapshot.
    unsnapshotted: usize,
}

impl SearchEngine {
    pub fn new(
        db: Db,
        dim: usize,
        params: HnswParams,
        snapshots: Option<SnapshotConfig>,
        cache: SearchCache,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            cache,
            position: std::sync::Mutex::new(position_digest(&FollowState::default())),
            salt: cache::digest(format!("dim={dim}|{params:?}|rrf={RRF_K},{RRF_DEPTH}").as_bytes()),
            text: RwLock::new(TextIndex::default()),
            vectors: RwLock::new(VectorIndex::new(dim, params, 10_000)),
            follow: tokio::sync::Mutex::new(FollowState::default()),
            ready: std::sync::atomic::AtomicBool::new(false),
            snapshots,
        })
    }

    /// Whether the initial catch-up with the outbox has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.text.read().expect("index lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies every outbox event available now. Events are applied by re-reading the product's
    /// current row, so applying one twice, or out of order, leaves the same index.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        let mut state = self.follow.lock().await;
        if state.load_text {
            self.load_text_index().await?;
            state.load_text = false;
        }
        let mut applied = 0;
        loop {
            let events = self.db.outbox_after(state.watermark, BATCH).await?;
            let fresh: Vec<_> = events.iter().filter(|e| !state.applied_above.contains(&e.id)).collect();
            let mut ids: Vec<ProductId> = fresh.iter().filter_map(|e| e.product_id.parse().ok()).collect();
            ids.sort();
            ids.dedup();
            if !ids.is_empty() {
                let live = self.db.get_products(&ids).await?;
                let mut index = self.text.write().expect("index lock");
                let mut vectors = self.vectors.write().expect("index lock");
                for id in &ids {
                    index.remove(*id);
                    vectors.remove(*id);
                }
                for product in live.into_iter().filter(|p| p.status == ProductStatus::Active) {
                    if let Some(embedding) = &product.embedding {
                        vectors.upsert(product.id, embedding);
                    }
                    index.upsert(product);
                }
            }
            if !fresh.is_empty() {
                self.cache.invalidate();
            }
            applied += fresh.len();
            state.unsnapshotted += fresh.len();
            state.applied_above.extend(fresh.iter().map(|e| e.id));
            advance(&mut state);
            // Only after the index holds these events: a key naming this position is then never
            // computed from an index that lacks them.
            *self.position.lock().expect("position lock") = position_digest(&state);
            if (events.len() as i64) < BATCH || fresh.is_empty() {
                self.refresh_graph();
                return Ok(applied);
            }
        }
    }

    /// Copies the vector graph for searching once enough points arrived since the last copy. The
    /// copy is made under the read lock, so searches go on; only this follower inserts, so
    /// nothing changes between the copy and its install.
    fn refresh_graph(&self) {
        if !self.vectors.read().expect("index lock").needs_compile() {
            return;
        }
        let started = Instant::now();
        let graph = self.vectors.read().expect("index lock").compile();
        self.vectors.write().expect("index lock").install(graph);
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "vector graph copied for search");
    }

    /// Every live product into the text index, a page at a time (after a snapshot restored the
    /// vectors; the outbox replay then brings both up to date).
    async fn load_text_index(&self) -> Result<(), StoreError> {
        let mut after = None;
        loop {
            let page = self.db.products_after(after, BATCH).await?;
            let Some(last) = page.last().map(|p| p.id) else { return Ok(()) };
            let mut text = self.text.write().expect("index lock");
            for product in page.into_iter().filter(|p| p.status == ProductStatus::Active) {
                text.upsert(product);
            }
            after = Some(last);
        }
    }

    /// Loads the snapshot, if there is a usable one; otherwise the index is rebuilt by replaying
    /// the whole outbox.
    async fn restore(self: &Arc<Self>) {
        let Some(config) = self.snapshots.clone() else { return };
        let (dim, params) = {
            let vectors = self.vectors.read().expect("index lock");
            (vectors.dim(), vectors.params())
        };
        let started = Instant::now();
        let loaded = tokio::task::spawn_blocking(move || snapshot::load(&config, dim, params)).await;
        match loaded {
            Ok(Ok(restored)) => {
                let points = restored.index.points();
                *self.vectors.write().expect("index lock") = restored.index;
                let mut state = self.follow.lock().await;
                state.watermark = restored.watermark;
                state.applied_above = restored.applied_above.into_iter().collect();
                state.load_text = true;
                tracing::info!(
                    points,
                    watermark = restored.watermark,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "search index loaded from its snapshot"
                );
            }
            Ok(Err(snapshot::LoadError::Missing)) => {
                tracing::info!("no search snapshot; building the index from the outbox")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "search snapshot not used; rebuilding the index from the outbox"),
            Err(e) => {
                tracing::warn!(error = %e, "loading the search snapshot failed; rebuilding the index from the outbox")
            }
        }
    }

    /// Writes a snapshot if anything changed since the last one. The follower is paused while
    /// it is written (searches are not), so the snapshot and its watermark agree.
    pub async fn snapshot(self: &Arc<Self>) {
        let Some(config) = self.snapshots.clone() else { return };
        let mut state = self.follow.lock().await;
        if state.unsnapshotted == 0 || state.load_text {
            return;
        }
        let (watermark, above): (i64, Vec<i64>) = (state.watermark, state.applied_above.iter().copied().collect());
        let engine = Arc::clone(self);
        let started = Instant::now();
        let written = tokio::task::spawn_blocking(move || {
            let vectors = engine.vectors.read().expect("index lock");
            snapshot::write(&config, &vectors, watermark, &above)
        })
        .await;
        match written {
            Ok(Ok(dir)) => {
                state.unsnapshotted = 0;
                tracing::info!(dir = %dir.display(), watermark, elapsed_ms = started.elapsed().as_millis() as u64, "search snapshot written");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "writing the search snapshot failed; will retry"),
            Err(e) => tracing::warn!(error = %e, "writing the search snapshot failed; will retry"),
        }
    }

    /// Follows the outbox until `stop` resolves: loads the snapshot first, takes one on schedule
    /// and a last one on the way out. The first catch-up marks the engine ready.
    pub async fn follow(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        self.restore().await;
        let interval = self.snapshots.as_ref().map(|c| c.interval);
        let mut last_snapshot = Instant::now();
        loop {
            match self.catch_up().await {
                Ok(_) => {
                    if !self.ready.swap(true, std::sync::atomic::Ordering::AcqRel) {
                        tracing::info!(products = self.len(), "search index caught up with the outbox");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "search index: reading the outbox failed; retrying"),
            }
            if interval.is_some_and(|every| last_snapshot.elapsed() >= every) {
                self.snapshot().await;
                last_snapshot = Instant::now();
            }
            tokio::select! {
                () = &mut stop => {
                    self.snapshot().await;
                    return;
                }
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// Full-text search: one page of active products matching the query and filter.
    pub async fn search(&self, request: &SearchRequest) -> Result<(Vec<Hit>, Option<String>), Error> {
        self.require_ready()?;
        let mut v = Violations::default();
        let query = request.query.trim();
        let chars = query.chars().count();
        if chars == 0 || chars > QUERY_MAX_CHARS {
            v.check::<()>("query", Err(format!("must have 1–{QUERY_MAX_CHARS} characters")));
        }
        let filter = parse_filter(&mut v, &request.filter);
        let limit = v.check("page_size", listing::page_size(request.page_size));
        v.finish()?;
        let limit = limit.expect("checked above");
        let sort = request.sort.unwrap_or(SearchSort::Relevance);
        let scope = scope_digest(&format!("search|{query}|{filter:?}|{sort:?}"));
        let offset = match request.page_token.as_str() {
            "" => 0,
            token => {
                let (offset, _) =
                    listing::decode_cursor(token, &scope).map_err(|why| Error::invalid("page_token", why))?;
                usize::try_from(offset).map_err(|_| Error::invalid("page_token", "is not valid"))?
            }
        };
        let key = text_key(self.key("search"), &scope, offset, limit);
        let hydrate =
            |c: &Cached| Some((self.products(&c.hits, |product, score| Hit { product, score })?, c.next.clone()));
        if let Some(cached) = self.cache.get(&key, hydrate).await {
            return Ok(cached);
        }
        let generation = self.cache.generation();
        let mut hits = self.text.read().expect("index lock").search(query, &filter);
        match sort {
            SearchSort::Relevance => {}
            SearchSort::PriceAsc => hits.sort_by_key(|h| (h.product.price.amount_minor, h.product.id)),
            SearchSort::PriceDesc => {
                hits.sort_by_key(|h| (std::cmp::Reverse(h.product.price.amount_minor), std::cmp::Reverse(h.product.id)))
            }
            SearchSort::Newest => {
                hits.sort_by_key(|h| (std::cmp::Reverse(h.product.created_at), std::cmp::Reverse(h.product.id)))
            }
        }
        let total = hits.len();
        let page: Vec<Hit> = hits.into_iter().skip(offset).take(limit).collect();
        let next = (offset + page.len() < total).then(|| listing::encode_cursor(&scope, (offset + limit) as i64, ""));
        let cached = Cached { hits: page.iter().map(|h| (h.product.id, h.score)).collect(), next: next.clone() };
        self.cache.put(key, generation, cached).await;
        Ok((page, next))
    }
}

impl SearchEngine {
    /// The `top_k` active products most similar to a query vector, best first.
    pub async fn search_by_vector(&self, request: &VectorRequest) -> Result<Vec<(Product, f32)>, Error> {
        self.require_ready()?;
        let dim = self.vectors.read().expect("index lock").dim();
        let mut v = Violations::default();
        check_vector(&mut v, &request.vector, dim);
        let k = parse_top_k(&mut v, request.top_k);
        let filter = parse_filter(&mut v, &request.filter);
        v.finish()?;
        let key = vector_key(self.key("vector"), &request.vector, k, &filter);
        self.cached(key, || self.nearest(&request.vector, k, &filter, None)).await
    }

    /// Products that look like `product_id` (by embedding), never including it.
    pub async fn similar_products(
        &self,
        product_id: &str,
        top_k: i32,
        filter: &FilterInput,
    ) -> Result<Vec<(Product, f32)>, Error> {
        self.require_ready()?;
        let mut v = Violations::default();
        let id = v.check("product_id", product_id.parse::<ProductId>());
        let k = parse_top_k(&mut v, top_k);
        let filter = parse_filter(&mut v, filter);
        v.finish()?;
        let id = id.expect("checked above");
        let query = {
            let text = self.text.read().expect("index lock");
            if text.get(id).is_none() {
                return Err(Error::NotFound { resource: "product", id: id.to_string() });
            }
            let vectors = self.vectors.read().expect("index lock");
            vectors.vector(id)
        };
        let query = query.ok_or_else(|| Error::FailedPrecondition("the product has no embedding".into()))?;
        // The product's own embedding is in the key too: its position in the index already
        // changes with every write, this makes the key say what was searched.
        let key = vector_key(self.key("similar").part(id.0.as_bytes()), &query, k, &filter);
        self.cached(key, || self.nearest(&query, k, &filter, Some(id))).await
    }

    /// Text and vector results fused by reciprocal-rank fusion: each list contributes
    /// `1 / (RRF_K + rank)` per product, so neither score scale dominates the other.
    pub async fn hybrid(&self, query: &str, request: &VectorRequest) -> Result<Vec<(Product, f32)>, Error> {
        self.require_ready()?;
        let dim = self.vectors.read().expect("index lock").dim();
        let mut v = Violations::default();
        let query = query.trim();
        let chars = query.chars().count();
        if chars == 0 || chars > QUERY_MAX_CHARS {
            v.check::<()>("query", Err(format!("must have 1–{QUERY_MAX_CHARS} characters")));
        }
        check_vector(&mut v, &request.vector, dim);
        let k = parse_top_k(&mut v, request.top_k);
        let filter = parse_filter(&mut v, &request.filter);
        v.finish()?;
        let key = vector_key(self.key("hybrid").part(query.as_bytes()), &request.vector, k, &filter);
        self.cached(key, || self.fuse(query, &request.vector, k, &filter)).await
    }

    fn fuse(&self, query: &str, vector: &[f32], k: usize, filter: &ProductFilter) -> Vec<(Product, f32)> {
        let text_hits: Vec<Product> = self
            .text
            .read()
            .expect("index lock")
            .search(query, filter)
            .into_iter()
            .take(RRF_DEPTH)
            .map(|h| h.product)
            .collect();
        let vector_hits: Vec<Product> =
            self.nearest(vector, RRF_DEPTH, filter, None).into_iter().map(|(p, _)| p).collect();
        let mut fused: std::collections::HashMap<ProductId, (f32, Product)> = std::collections::HashMap::new();
        for list in [text_hits, vector_hits] {
            for (rank, product) in list.into_iter().enumerate() {
                let contribution = 1.0 / (RRF_K + rank as f32 + 1.0);
                fused.entry(product.id).or_insert((0.0, product)).0 += contribution;
            }
        }
        let mut fused: Vec<(Product, f32)> = fused.into_values().map(|(score, p)| (p, score)).collect();
        fused.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id)));
        fused.truncate(k);
        fused
    }

    /// A cached result for `key`, or `compute`'s, cached.
    async fn cached(
        &self,
        key: Key,
        compute: impl FnOnce() -> Vec<(Product, f32)>,
    ) -> Result<Vec<(Product, f32)>, Error> {
        if let Some(hits) = self.cache.get(&key, |c| self.products(&c.hits, |p, score| (p, score))).await {
            return Ok(hits);
        }
        let generation = self.cache.generation();
        let hits = compute();
        let cached = Cached { hits: hits.iter().map(|(p, score)| (p.id, *score)).collect(), next: None };
        self.cache.put(key, generation, cached).await;
        Ok(hits)
    }

    /// The indexed products a cached entry names, as they are now; `None` when one is missing
    /// (the entry came from a replica ahead of this one, or the product has gone).
    fn products<T>(&self, hits: &[(ProductId, f32)], make: impl Fn(Product, f32) -> T) -> Option<Vec<T>> {
        let text = self.text.read().expect("index lock");
        hits.iter().map(|(id, score)| text.get(*id).map(|p| make(p.clone(), *score))).collect()
    }

    /// A cache key for `rpc` at the index's current position.
    fn key(&self, rpc: &str) -> KeyBuilder {
        let position = *self.position.lock().expect("position lock");
        KeyBuilder::new(&self.salt, &position, rpc)
    }

    pub fn cache_health(&self) -> cache::CacheHealth {
        self.cache.health()
    }

    fn nearest(
        &self,
        query: &[f32],
        k: usize,
        filter: &ProductFilter,
        exclude: Option<ProductId>,
    ) -> Vec<(Product, f32)> {
        let text = self.text.read().expect("index lock");
        let vectors = self.vectors.read().expect("index lock");
        // Only a filter beyond "active" can be selective; then its matches may be few enough to scan.
        let narrowed = filter.category_id.is_some()
            || filter.seller_id.is_some()
            || filter.currency.is_some()
            || filter.min_price_minor.is_some()
            || filter.max_price_minor.is_some();
        let candidates = narrowed.then(|| text.matching(filter));
        let accept = |id: ProductId| Some(id) != exclude && text.get(id).is_some_and(|p| text::matches(filter, p));
        let wanted = k + usize::from(exclude.is_some());
        vectors
            .search(query, wanted, accept, candidates.as_deref())
            .into_iter()
            .filter_map(|VectorHit { product, similarity }| text.get(product).map(|p| (p.clone(), similarity)))
            .take(k)
            .collect()
    }

    fn require_ready(&self) -> Result<(), Error> {
        if self.is_ready() { Ok(()) } else { Err(Error::Busy("the search index is still loading; retry shortly")) }
    }
}

/// The cache-key part of a text search page: its scope (query, filter, sort) and the page.
fn text_key(key: KeyBuilder, scope: &str, offset: usize, limit: usize) -> Key {
    key.part(scope.as_bytes()).part(&(offset as u64).to_le_bytes()).part(&(limit as u64).to_le_bytes()).finish()
}

/// The cache-key part of a vector query: the vector's exact bits, `k` and the filter.
fn vector_key(key: KeyBuilder, vector: &[f32], k: usize, filter: &ProductFilter) -> Key {
    let bits: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    key.part(&bits).part(&(k as u64).to_le_bytes()).part(format!("{filter:?}").as_bytes()).finish()
}

fn position_digest(state: &FollowState) -> [u8; 32] {
    let ids: Vec<u8> = std::iter::once(state.watermark)
        .chain(state.applied_above.iter().copied())
        .flat_map(i64::to_le_bytes)
        .collect();
    cache::digest(&ids)
}

/// Moves the watermark over contiguous applied ids, and over a hole that has stayed open past
/// [`GAP_TIMEOUT`] (a transaction that rolled back after taking its id).
fn advance(state: &mut FollowState) {
    loop {
        while state.applied_above.remove(&(state.watermark + 1)) {
            state.watermark += 1;
        }
        let Some(&next) = state.applied_above.first() else {
            state.gap_since = None;
            return;
        };
        let since = *state.gap_since.get_or_insert_with(Instant::now);
        if since.elapsed() < GAP_TIMEOUT {
            return;
        }
        tracing::debug!(from = state.watermark + 1, to = next - 1, "skipping outbox ids that never committed");
        state.watermark = next - 1;
        state.gap_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(category: &str, max_price: i64) -> ProductFilter {
        let input = FilterInput { category_id: category.into(), max_price_minor: max_price, ..Default::default() };
        let mut v = Violations::default();
        let filter = parse_filter(&mut v, &input);
        v.finish().expect("valid filter");
        filter
    }

    fn at(position: i64) -> KeyBuilder {
        let state = FollowState { watermark: position, ..Default::default() };
        KeyBuilder::new(&[0; 32], &position_digest(&state), "vector")
    }

    #[test]
    fn the_same_vector_query_has_the_same_key_and_any_difference_changes_it() {
        let (v, shoes) = ([0.5, 0.25], filter("shoes", 0));
        let key = || vector_key(at(7), &v, 10, &shoes);
        assert_eq!(key(), key());
        assert_ne!(key(), vector_key(at(7), &v, 10, &filter("hats", 0)), "category");
        assert_ne!(key(), vector_key(at(7), &v, 10, &filter("shoes", 500)), "price bound");
        assert_ne!(key(), vector_key(at(7), &v, 11, &shoes), "top_k");
        assert_ne!(key(), vector_key(at(7), &[0.5, 0.250001], 10, &shoes), "vector");
        assert_ne!(key(), vector_key(at(8), &v, 10, &shoes), "a catalog write moved the index on");
    }

    #[test]
    fn text_pages_key_by_scope_and_page() {
        let scope = |f: &ProductFilter| scope_digest(&format!("search|shoes|{f:?}|{:?}", SearchSort::Relevance));
        let (shoes, hats) = (filter("shoes", 0), filter("hats", 0));
        assert_eq!(text_key(at(3), &scope(&shoes), 0, 20), text_key(at(3), &scope(&shoes), 0, 20));
        assert_ne!(text_key(at(3), &scope(&shoes), 0, 20), text_key(at(3), &scope(&hats), 0, 20));
        assert_ne!(text_key(at(3), &scope(&shoes), 0, 20), text_key(at(3), &scope(&shoes), 20, 20));
        assert_ne!(text_key(at(3), &scope(&shoes), 0, 20), text_key(at(3), &scope(&shoes), 0, 10));
    }

    #[test]
    fn ids_applied_above_a_hole_are_part_of_the_position() {
        let mut state = FollowState { watermark: 5, ..Default::default() };
        let before = position_digest(&state);
        state.applied_above.insert(7);
        assert_ne!(position_digest(&state), before, "two replicas at watermark 5 may hold different events");
    }

    #[test]
    fn the_watermark_waits_for_holes_then_skips_them() {
        let mut state = FollowState::default();
        state.applied_above.extend([1, 2, 4, 5]);
        advance(&mut state);
        assert_eq!(state.watermark, 2, "3 may still commit");
        state.applied_above.insert(3);
        advance(&mut state);
        assert_eq!(state.watermark, 5);
        state.applied_above.insert(7);
        advance(&mut state);
        assert_eq!(state.watermark, 5);
        state.gap_since = Some(Instant::now() - GAP_TIMEOUT - Duration::from_secs(1));
        advance(&mut state);
        assert_eq!(state.watermark, 7, "a hole open past the timeout is skipped");
    }
}
