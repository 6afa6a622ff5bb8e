//! Visual search: an HNSW graph (hnsw_rs) over L2-normalised embeddings, so cosine similarity is a
//! dot product. hnsw_rs can't delete, so an updated or deleted product's old point stays in the
//! graph marked stale and is filtered out of every search; filters are applied during the graph
//! walk, and a selective filter is answered by an exact scan of the few products that match.

use std::collections::HashMap;

use hnsw_rs::{
    anndists::dist::DistDot,
    filter::FilterT,
    hnsw::{Hnsw, Neighbour},
};

use crate::domain::product::ProductId;

/// Index build and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node (hnsw_rs allows at most 256).
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        // M = 32 rather than the common 16: on embedding-like data M = 16 plateaus below 0.95
        // recall@10 with hnsw_rs (see shared/STACK.md).
        Self { m: 32, ef_construction: 200, ef_search: 96 }
    }
}

/// A filter below this many matching products is answered by an exact scan: exact, and cheaper
/// than a graph walk that would have to skip nearly every node.
pub const EXACT_SCAN_BELOW: usize = 2_000;
const MAX_LAYERS: usize = 16;

pub struct VectorIndex {
    hnsw: Hnsw<'static, f32, DistDot>,
    params: HnswParams,
    dim: usize,
    /// Graph point id → the product it belongs to, `None` once stale.
    points: Vec<Option<ProductId>>,
    /// Each product's live point and its normalised vector (kept for exact scans).
    live: HashMap<ProductId, (usize, Vec<f32>)>,
}

/// A search hit: product and cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorHit {
    pub product: ProductId,
    pub similarity: f32,
}

/// Vectors are stored just short of unit length. hnsw_rs's dot distance asserts `1 - a·b >= 0`,
/// and two unit vectors rounded to f32 can have a dot product a hair above 1 — a panic on the
/// search path. Scaling both sides by this factor keeps every product at most SHRINK² < 1 without
/// changing any ranking.
const SHRINK: f64 = 0.9999;

/// Scales to (just under) unit length; `None` for a zero or non-finite vector, which has no
/// direction.
pub fn normalized(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    (norm.is_finite() && norm > 0.0).then(|| v.iter().map(|x| (f64::from(*x) * SHRINK / norm) as f32).collect())
}

/// Cosine similarity from the dot product of two stored vectors.
fn cosine(dot: f32) -> f32 {
    (f64::from(dot) / (SHRINK * SHRINK)) as f32
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

struct Accept<'a, F: Fn(ProductId) -> bool> {
    points: &'a [Option<ProductId>],
    filter: &'a F,
}

impl<F: Fn(ProductId) -> bool> FilterT for Accept<'_, F> {
    fn hnsw_filter(&self, id: &usize) -> bool {
        self.points.get(*id).copied().flatten().is_some_and(self.filter)
    }
}

impl VectorIndex {
    pub fn new(dim: usize, params: HnswParams, expected: usize) -> Self {
        Self {
            hnsw: Hnsw::new(params.m.clamp(2, 256), expected.max(1_000), MAX_LAYERS, params.ef_construction, DistDot),
            params,
            dim,
            points: Vec::new(),
            live: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The stored (normalised) vector of a product.
    pub fn vector(&self, id: ProductId) -> Option<&[f32]> {
        self.live.get(&id).map(|(_, v)| v.as_slice())
    }

    /// Adds or replaces a product's vector. Vectors of the wrong dimension or without direction
    /// are not indexed (the catalog refuses them; this guards the index against old rows).
    pub fn upsert(&mut self, id: ProductId, vector: &[f32]) {
        if self.live.get(&id).is_some_and(|(_, v)| normalized(vector).as_deref() == Some(v.as_slice())) {
            return;
        }
        self.remove(id);
        let Some(unit) = normalized(vector).filter(|v| v.len() == self.dim) else { return };
        let point = self.points.len();
        self.points.push(Some(id));
        self.hnsw.insert_slice((&unit, point));
        self.live.insert(id, (point, unit));
    }

    pub fn remove(&mut self, id: ProductId) {
        if let Some((point, _)) = self.live.remove(&id) {
            self.points[point] = None;
        }
    }

    /// The `k` products most similar to `query` among those `filter` accepts, best first.
    /// `candidates`, when the caller knows the filter matches few products, is that set: they are
    /// scanned exactly instead of walking the graph.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: impl Fn(ProductId) -> bool,
        candidates: Option<&[ProductId]>,
    ) -> Vec<VectorHit> {
        let Some(query) = normalized(query).filter(|q| q.len() == self.dim) else { return Vec::new() };
        if k == 0 || self.live.is_empty() {
            return Vec::new();
        }
        if let Some(candidates) = candidates.filter(|c| c.len() < EXACT_SCAN_BELOW) {
            let mut hits: Vec<VectorHit> = candidates
                .iter()
                .filter(|id| filter(**id))
                .filter_map(|id| {
                    self.live.get(id).map(|(_, v)| VectorHit { product: *id, similarity: cosine(dot(&query, v)) })
                })
                .collect();
            hits.sort_by(|a, b| b.similarity.total_cmp(&a.similarity).then_with(|| a.product.cmp(&b.product)));
            hits.truncate(k);
            return hits;
        }
        let accept = Accept { points: &self.points, filter: &filter };
        let ef = self.params.ef_search.max(k);
        let found: Vec<Neighbour> = self.hnsw.search_filter(&query, k, ef, Some(&accept));
        found
            .into_iter()
            .filter_map(|n| self.points.get(n.d_id).copied().flatten().map(|product| (product, n)))
            .map(|(product, n)| VectorHit { product, similarity: cosine(1.0 - n.distance) })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_vectors_never_trip_the_distance_assertion() {
        let mut index = VectorIndex::new(3, HnswParams::default(), 10);
        let a = ProductId::generate();
        let b = ProductId::generate();
        // Values whose normalised dot product with themselves rounds above 1 without the shrink.
        index.upsert(a, &[0.1, 0.7, 0.3]);
        index.upsert(b, &[0.3, 0.1, 0.7]);
        let hits = index.search(&[0.1, 0.7, 0.3], 2, |_| true, None);
        assert_eq!(hits[0].product, a);
        assert!((hits[0].similarity - 1.0).abs() < 1e-4, "{hits:?}");
        index.remove(a);
        let hits = index.search(&[0.1, 0.7, 0.3], 2, |_| true, None);
        assert_eq!(hits.iter().map(|h| h.product).collect::<Vec<_>>(), [b], "removed points never come back");
    }
}
