//! The vector index: a proximity graph over embeddings, built in bulk by hnsw_rs and then owned,
//! searched and extended by us (see `graph.rs` for why and how). Each point belongs to a key
//! (the caller's id for the thing embedded: a product, for the search service).
//!
//! A search walks the graph comparing int8 codes, then re-ranks the walk's candidates exactly on
//! the half-precision vectors (see `store.rs`). An update or delete leaves the key's old point
//! in the graph, marked stale: walks pass through it but never return it. Once stale
//! points outnumber live ones, or a batch of new vectors is large next to the index, the whole
//! index is rebuilt from the live vectors in bulk.

use std::{
    collections::HashMap,
    io::{BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use hnsw_rs::{anndists::dist::Distance, hnsw::Hnsw};

use super::{
    Key,
    distance::Metric,
    graph::{Graph, NO_LINK, Scored, Space},
    store::{Query, Store},
};

/// Index build and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links a new node gets (up to twice that once others link back); hnsw_rs allows at most 256.
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub metric: Metric,
}

impl Default for HnswParams {
    fn default() -> Self {
        // ef_search from BENCHMARKS.md: recall@10 was 0.990 at ef 128 on the 20k × 768 mixture
        // and 0.9998 at 100k (where ef 16 already gave 0.99), so 128 leaves a margin for data
        // harder than the mixture at ~1.9 ms per single-threaded search at 100k.
        Self { m: 32, ef_construction: 200, ef_search: 128, metric: Metric::Cosine }
    }
}

/// A filter below this many matching keys is answered by an exact scan: exact, and cheaper
/// than a graph walk that would have to skip nearly every node.
pub const EXACT_SCAN_BELOW: usize = 2_000;
/// Batches of new vectors at least this large (and at least a quarter of the index) are built
/// in bulk by hnsw_rs, on every core, instead of inserted one by one.
pub const BULK_MIN: usize = 1_024;
const MAX_LAYERS: usize = 16;
const VECTORS_FILE: &str = "vectors.f16";
const POINTS_FILE: &str = "points.bin";
const LINKS_FILE: &str = "links.u32";

/// A query against the store: what the graph walks with.
struct Probe<'a> {
    store: &'a Store,
    query: &'a Query,
}

impl Space for Probe<'_> {
    #[inline]
    fn to_query(&self, point: u32) -> f32 {
        self.store.approx(self.query, point)
    }

    #[inline]
    fn between(&self, a: u32, b: u32) -> f32 {
        self.store.approx_between(a, b)
    }

    #[inline]
    fn prefetch(&self, point: u32) {
        self.store.prefetch(point);
    }
}

/// hnsw_rs's view of a point is its slot in the store; the distance looks the codes up.
struct SlotDistance<'a>(&'a Store);

impl Distance<u32> for SlotDistance<'_> {
    fn eval(&self, a: &[u32], b: &[u32]) -> f32 {
        self.0.approx_between(a[0], b[0])
    }
}

pub struct VectorIndex<K> {
    params: HnswParams,
    store: Store,
    graph: Graph,
    /// Store slot → the key it belongs to, `None` once stale.
    points: Vec<Option<K>>,
    /// Each key's live point.
    live: HashMap<K, u32>,
}

/// A search hit: the key and its score (cosine similarity, or minus the Euclidean distance;
/// higher is closer either way).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorHit<K> {
    pub key: K,
    pub similarity: f32,
}

/// Scales to unit length; `None` for a zero or non-finite vector, which has no direction.
pub fn normalized(v: &[f32]) -> Option<Vec<f32>> {
    Metric::Cosine.prepare(v)
}

impl<K: Key> VectorIndex<K> {
    pub fn new(dim: usize, params: HnswParams, expected: usize) -> Self {
        Self {
            params,
            store: Store::new(dim, params.metric, expected),
            graph: Graph::new(params.m),
            points: Vec::with_capacity(expected),
            live: HashMap::with_capacity(expected),
        }
    }

    /// An index of `items`, built in bulk: hnsw_rs inserts them on every core, then its layer 0
    /// becomes our graph and the crate's structure is dropped. Later items replace earlier ones
    /// for the same key.
    pub fn build(dim: usize, params: HnswParams, items: impl IntoIterator<Item = (K, Vec<f32>)>) -> Self {
        let mut index = Self::new(dim, params, 0);
        let mut slots: HashMap<K, usize> = HashMap::new();
        let mut prepared: Vec<(K, Vec<f32>)> = Vec::new();
        for (id, vector) in items {
            let Some(v) = index.prepare(&vector) else {
                if let Some(slot) = slots.remove(&id) {
                    prepared[slot].1.clear();
                }
                continue;
            };
            match slots.get(&id) {
                Some(&slot) => prepared[slot].1 = v,
                None => {
                    slots.insert(id, prepared.len());
                    prepared.push((id, v));
                }
            }
        }
        prepared.retain(|(_, v)| !v.is_empty());
        index.store = Store::new(dim, params.metric, prepared.len());
        for (id, v) in &prepared {
            let slot = index.store.push(v);
            index.points.push(Some(*id));
            index.live.insert(*id, slot);
        }
        drop(prepared);
        let n = index.points.len();
        if n == 0 {
            return index;
        }
        let hnsw = Hnsw::<u32, SlotDistance>::new(
            params.m.clamp(2, 256),
            n,
            MAX_LAYERS,
            params.ef_construction,
            SlotDistance(&index.store),
        );
        let slots: Vec<[u32; 1]> = (0..n as u32).map(|p| [p]).collect();
        let data: Vec<(&[u32], usize)> = slots.iter().enumerate().map(|(i, s)| (s.as_slice(), i)).collect();
        hnsw.parallel_insert_slice(&data);
        let width = 2 * params.m.max(1);
        let mut links = vec![NO_LINK; n * width];
        for point in hnsw.get_point_indexation() {
            let node = point.get_origin_id();
            let layer0 = point.get_neighborhood_id().into_iter().next().unwrap_or_default();
            let row = &mut links[node * width..(node + 1) * width];
            row.iter_mut().zip(layer0.into_iter().map(|n| n.d_id as u32)).for_each(|(slot, link)| *slot = link);
        }
        drop(hnsw);
        // hnsw_rs's structure was several times the size of what is kept; hand the freed pages
        // back to the kernel, or the process stays at the build's peak.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free heap memory; nothing points into it.
        unsafe {
            libc::malloc_trim(0);
        }
        index.graph = Graph::from_links(params.m, links, |_| true).expect("rows of the graph's width");
        index
    }

    /// This index's live vectors plus `items`, built in bulk (which also drops stale points).
    pub fn rebuilt_with(&self, items: Vec<(K, Vec<f32>)>) -> Self {
        let current = self.live.iter().map(|(id, slot)| (*id, self.store.vector(*slot)));
        Self::build(self.store.dim(), self.params, current.chain(items))
    }

    /// Whether `incoming` new vectors are better built in bulk along with the current ones than
    /// inserted one by one, or enough points went stale to be worth a rebuild.
    pub fn should_rebuild(&self, incoming: usize) -> bool {
        let stale = self.points.len() - self.live.len();
        (incoming >= BULK_MIN && incoming >= self.live.len() / 4) || (stale >= BULK_MIN && stale > self.live.len())
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.store.dim()
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Graph points, stale ones included.
    pub fn points(&self) -> usize {
        self.points.len()
    }

    fn prepare(&self, vector: &[f32]) -> Option<Vec<f32>> {
        self.params.metric.prepare(vector).filter(|v| v.len() == self.store.dim())
    }

    /// The stored vector of a key (unit length under the cosine metric, to half precision).
    pub fn vector(&self, id: K) -> Option<Vec<f32>> {
        Some(self.store.vector(*self.live.get(&id)?))
    }

    /// Adds or replaces a key's vector. Vectors of the wrong dimension or without direction
    /// are not indexed (callers should refuse them; this guards the index against old data).
    pub fn upsert(&mut self, id: K, vector: &[f32]) {
        let Some(prepared) = self.prepare(vector) else {
            self.remove(id);
            return;
        };
        if self.live.get(&id).is_some_and(|slot| self.store.holds(*slot, &prepared)) {
            return;
        }
        self.remove(id);
        let slot = self.store.push(&prepared);
        self.points.push(Some(id));
        self.live.insert(id, slot);
        let query = self.store.query_for(slot);
        let probe = Probe { store: &self.store, query: &query };
        let points = &self.points;
        self.graph.insert(&probe, self.params.m, self.params.ef_construction, |p| {
            points.get(p as usize).is_some_and(Option::is_some)
        });
    }

    pub fn remove(&mut self, id: K) {
        if let Some(point) = self.live.remove(&id) {
            self.points[point as usize] = None;
        }
    }

    /// Writes the index into `dir` (an empty directory): the vectors, the point → key table
    /// and the graph's links. Returns the files written.
    pub fn dump(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let vectors = dir.join(VECTORS_FILE);
        write_words(&vectors, self.store.halves().iter().map(|h| h.to_le_bytes()))?;
        let points = dir.join(POINTS_FILE);
        write_words(&points, self.points.iter().map(|p| p.map_or([0; 16], Key::to_bytes)))?;
        let links = dir.join(LINKS_FILE);
        write_words(&links, self.graph.links().iter().map(|l| l.to_le_bytes()))?;
        Ok(vec![vectors, points, links])
    }

    /// Reads an index written by [`VectorIndex::dump`]. The caller has checked the files' digest.
    pub fn load(dir: &Path, dim: usize, params: HnswParams) -> anyhow::Result<Self> {
        let bytes = read_file(&dir.join(POINTS_FILE))?;
        anyhow::ensure!(bytes.len() % 16 == 0, "points file is {} bytes, not a multiple of 16", bytes.len());
        let points: Vec<Option<K>> = bytes
            .chunks_exact(16)
            .map(|raw| {
                let raw: [u8; 16] = raw.try_into().expect("16-byte chunk");
                (raw != [0; 16]).then(|| K::from_bytes(raw))
            })
            .collect();
        let bytes = read_file(&dir.join(VECTORS_FILE))?;
        anyhow::ensure!(bytes.len() == points.len() * dim * 2, "vectors file does not hold {} × {dim}", points.len());
        let halves: Vec<u16> = bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        drop(bytes);
        let bytes = read_file(&dir.join(LINKS_FILE))?;
        anyhow::ensure!(
            bytes.len() == points.len() * 2 * params.m.max(1) * 4,
            "links file does not hold {} rows of {}",
            points.len(),
            2 * params.m
        );
        let links: Vec<u32> = bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        drop(bytes);
        let graph = Graph::from_links(params.m, links, |p| points.get(p as usize).is_some_and(Option::is_some))?;
        let live = points.iter().enumerate().filter_map(|(point, id)| id.map(|id| (id, point as u32))).collect();
        Ok(Self { params, store: Store::from_halves(dim, params.metric, &halves), graph, points, live })
    }

    /// The `k` keys most similar to `query` among those `filter` accepts, best first.
    /// `candidates`, when the caller knows the filter matches few keys, is that set: they are
    /// scanned exactly instead of walking the graph.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: impl Fn(K) -> bool,
        candidates: Option<&[K]>,
    ) -> Vec<VectorHit<K>> {
        self.search_with_ef(query, k, self.params.ef_search, filter, candidates)
    }

    /// [`VectorIndex::search`] with an explicit beam width (benchmarks sweep it).
    pub fn search_with_ef(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: impl Fn(K) -> bool,
        candidates: Option<&[K]>,
    ) -> Vec<VectorHit<K>> {
        let Some(query) = self.prepare(query) else { return Vec::new() };
        if k == 0 || self.live.is_empty() {
            return Vec::new();
        }
        let query = self.store.query(&query);
        let points: Vec<u32> = if let Some(candidates) = candidates.filter(|c| c.len() < EXACT_SCAN_BELOW) {
            candidates.iter().filter(|id| filter(**id)).filter_map(|id| self.live.get(id).copied()).collect()
        } else {
            let accept = |point: u32| self.points[point as usize].is_some_and(&filter);
            let probe = Probe { store: &self.store, query: &query };
            self.graph.walk(&probe, ef.max(k), accept).into_iter().map(|s| s.point).collect()
        };
        // The walk ranked by int8 codes; the answer is ranked and scored exactly.
        let mut found: Vec<Scored> =
            points.into_iter().map(|point| Scored { distance: self.store.exact(&query, point), point }).collect();
        found.sort_unstable();
        let metric = self.params.metric;
        found
            .into_iter()
            .filter_map(|s| self.points[s.point as usize].map(|key| (key, s.distance)))
            .take(k)
            .map(|(key, distance)| VectorHit { key, similarity: metric.score(distance) })
            .collect()
    }
}

fn write_words<const N: usize>(path: &Path, words: impl Iterator<Item = [u8; N]>) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    for word in words {
        out.write_all(&word)?;
    }
    out.flush()?;
    Ok(())
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn identical_vectors_score_one_and_removed_points_never_come_back() {
        let mut index = VectorIndex::new(3, HnswParams::default(), 10);
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        index.upsert(a, &[0.1, 0.7, 0.3]);
        index.upsert(b, &[0.3, 0.1, 0.7]);
        let hits = index.search(&[0.1, 0.7, 0.3], 2, |_| true, None);
        assert_eq!(hits[0].key, a);
        assert!((hits[0].similarity - 1.0).abs() < 1e-3, "{hits:?}");
        index.remove(a);
        let hits = index.search(&[0.1, 0.7, 0.3], 2, |_| true, None);
        assert_eq!(hits.iter().map(|h| h.key).collect::<Vec<_>>(), [b], "removed points never come back");
    }

    #[test]
    fn the_l2_metric_ranks_by_euclidean_distance_not_direction() {
        let params = HnswParams { metric: Metric::L2, ..HnswParams::default() };
        let mut index = VectorIndex::new(2, params, 10);
        let near = Uuid::new_v4();
        let same_direction_far = Uuid::new_v4();
        index.upsert(near, &[1.0, 1.2]);
        index.upsert(same_direction_far, &[10.0, 10.0]);
        let hits = index.search(&[1.0, 1.0], 2, |_| true, None);
        assert_eq!(hits[0].key, near, "cosine would have tied them");
        assert!((hits[0].similarity + 0.2).abs() < 1e-3, "score is minus the distance: {hits:?}");
    }

    #[test]
    fn a_bulk_build_and_one_by_one_inserts_find_the_same_products() {
        let mut mixture = crate::vector::synthetic::Mixture::embedding_like(3, 32);
        let data: Vec<(Uuid, Vec<f32>)> = (0..3_000).map(|_| (Uuid::new_v4(), mixture.sample())).collect();
        let bulk = VectorIndex::build(32, HnswParams::default(), data.iter().cloned());
        let mut one_by_one = VectorIndex::new(32, HnswParams::default(), data.len());
        for (id, v) in &data {
            one_by_one.upsert(*id, v);
        }
        let mut rebuilt = bulk.rebuilt_with(vec![(data[0].0, data[1].1.clone())]);
        assert_eq!((bulk.len(), one_by_one.len(), rebuilt.len()), (3_000, 3_000, 3_000));
        for (id, v) in data.iter().step_by(97) {
            for index in [&bulk, &one_by_one] {
                assert_eq!(index.search(v, 1, |_| true, None)[0].key, *id, "a stored vector finds itself");
            }
        }
        let top: Vec<Uuid> = rebuilt.search(&data[1].1, 2, |_| true, None).iter().map(|h| h.key).collect();
        assert!(top.contains(&data[0].0) && top.contains(&data[1].0), "the rebuild took the new vector: {top:?}");
        rebuilt.remove(data[1].0);
        assert!(rebuilt.search(&data[1].1, 5, |_| true, None).iter().all(|h| h.key != data[1].0));
        assert!(!rebuilt.should_rebuild(10) && rebuilt.should_rebuild(BULK_MIN));
    }
}
