//! Queries against the index: text, vector, similar-product and hybrid search, each answered
//! from the result cache when it can be.

use super::{
    SearchEngine,
    cache::{Cached, Key, KeyBuilder},
    text::{self, Hit},
};
use crate::domain::{
    Error,
    error::Violations,
    listing::{self, FilterInput, ProductFilter, scope_digest},
    product::{Product, ProductId, ProductStatus},
};
use crate::vector::{self, VectorHit};

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
pub(super) const RRF_K: f32 = 60.0;
pub(super) const RRF_DEPTH: usize = 100;

pub const DEFAULT_TOP_K: usize = 10;
pub const MAX_TOP_K: usize = 100;

/// Validates a filter; search only ever shows active products, so a status other than ACTIVE is
/// refused rather than silently ignored.
pub(super) fn parse_filter(v: &mut Violations, input: &FilterInput) -> ProductFilter {
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

pub(super) fn parse_top_k(v: &mut Violations, top_k: i32) -> usize {
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

impl SearchEngine {
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
        self.cached(key, self.nearest_routed(&request.vector, k, &filter, None)).await
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
        self.cached(key, self.nearest_routed(&query, k, &filter, Some(id))).await
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
        self.cached(key, self.fuse(query, &request.vector, k, &filter)).await
    }

    async fn fuse(&self, query: &str, vector: &[f32], k: usize, filter: &ProductFilter) -> Vec<(Product, f32)> {
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
            self.nearest_routed(vector, RRF_DEPTH, filter, None).await.into_iter().map(|(p, _)| p).collect();
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

    /// A cached result for `key`, or `compute`'s, cached. `compute` is not started on a hit.
    async fn cached(
        &self,
        key: Key,
        compute: impl Future<Output = Vec<(Product, f32)>>,
    ) -> Result<Vec<(Product, f32)>, Error> {
        if let Some(hits) = self.cache.get(&key, |c| self.products(&c.hits, |p, score| (p, score))).await {
            return Ok(hits);
        }
        let generation = self.cache.generation();
        let hits = compute.await;
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

    /// A cache key for `rpc` at the index's current position. Results routed to Milvus are
    /// keyed apart from the local index's: the two may rank near-ties differently.
    fn key(&self, rpc: &str) -> KeyBuilder {
        let position = *self.position.lock().expect("position lock");
        let key = KeyBuilder::new(&self.salt, &position, rpc);
        if self.remote.get().is_some() { key.part(b"remote") } else { key }
    }

    /// The nearest products through the remote vector store when one is configured, falling
    /// back to the local index when it fails (its breaker open, unreachable, refusing).
    async fn nearest_routed(
        &self,
        query: &[f32],
        k: usize,
        filter: &ProductFilter,
        exclude: Option<ProductId>,
    ) -> Vec<(Product, f32)> {
        if let Some(remote) = self.remote.get() {
            match remote.nearest(query, k, filter, exclude).await {
                Ok(hits) => {
                    metrics::counter!("soko_vector_searches_total", "backend" => "milvus").increment(1);
                    return hits;
                }
                Err(e) => {
                    metrics::counter!("soko_vector_searches_total", "backend" => "local_fallback").increment(1);
                    tracing::warn!(error = %e, "vector search through Milvus failed; answered from the local index");
                }
            }
        }
        self.nearest(query, k, filter, exclude)
    }

    pub fn cache_health(&self) -> super::cache::CacheHealth {
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
            .filter_map(|VectorHit { key, similarity }| text.get(key).map(|p| (p.clone(), similarity)))
            .take(k)
            .collect()
    }

    pub(super) fn require_ready(&self) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{FollowState, position_digest};

    fn filter(category: &str, max_price: i64) -> ProductFilter {
        let input = FilterInput { category_id: category.into(), max_price_minor: max_price, ..Default::default() };
        let mut v = Violations::default();
        let filter = parse_filter(&mut v, &input);
        v.finish().expect("valid filter");
        filter
    }

    fn at(position: i64) -> KeyBuilder {
        let state = FollowState { cursor: crate::outbox::OutboxCursor::at(position, []), ..Default::default() };
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
}
