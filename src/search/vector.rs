//! Visual search: an HNSW graph over product embeddings. hnsw_rs builds and owns the graph; a
//! flat copy of its links ([`FlatGraph`]) answers searches, and points inserted since the last
//! copy are scanned exactly until the next one. Vectors live once, in an arena both sides read:
//! hnsw_rs stores only each point's arena slot.
//!
//! hnsw_rs can't delete, so an updated or deleted product's old point stays in the graph marked
//! stale and is filtered out of every search; filters are applied during the graph walk, and a
//! selective filter is answered by an exact scan of the few products that match.

use std::{
    collections::HashMap,
    io::{BufWriter, Read, Write},
    path::Path,
    sync::{Arc, RwLock, RwLockReadGuard},
};

use hnsw_rs::{anndists::dist::Distance, api::AnnT, hnsw::Hnsw, hnswio::HnswIo};

use super::{
    distance::Metric,
    graph::{FlatGraph, NodeLinks, Scored},
};
use crate::domain::product::ProductId;

/// Index build and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node on the upper layers (twice that on layer 0); hnsw_rs allows at most 256.
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub metric: Metric,
}

impl Default for HnswParams {
    fn default() -> Self {
        // M = 32 rather than the common 16: on embedding-like data M = 16 plateaus below 0.95
        // recall@10 with hnsw_rs's graphs (see shared/STACK.md). ef_search from BENCHMARKS.md:
        // on the 10k × 768 test mixture recall@10 was 0.957 at 256 and 0.988 at 384 (hnswlib
        // needed 384 for 0.966 on the same data), so 384 leaves a margin.
        Self { m: 32, ef_construction: 200, ef_search: 384, metric: Metric::Cosine }
    }
}

/// A filter below this many matching products is answered by an exact scan: exact, and cheaper
/// than a graph walk that would have to skip nearly every node.
pub const EXACT_SCAN_BELOW: usize = 2_000;
/// Points inserted since the last flat copy are scanned exactly; past this many the copy is
/// refreshed (a few hundred ms at 100k points, off the write lock).
pub const FRESH_LIMIT: usize = 1_024;
const MAX_LAYERS: usize = 16;
const VECTORS_FILE: &str = "vectors.f32";
const POINTS_FILE: &str = "points.bin";
const GRAPH_BASENAME: &str = "graph";
const GRAPH_SUFFIXES: [&str; 2] = [".hnsw.graph", ".hnsw.data"];

/// Every point's vector, row after row, by arena slot.
struct Arena {
    dim: usize,
    rows: RwLock<Vec<f32>>,
}

impl Arena {
    fn read(&self) -> RwLockReadGuard<'_, Vec<f32>> {
        self.rows.read().expect("vector arena lock")
    }
}

fn row(rows: &[f32], dim: usize, point: u32) -> &[f32] {
    let start = point as usize * dim;
    &rows[start..start + dim]
}

/// hnsw_rs's view of a point is its arena slot; the distance looks the vectors up.
struct ArenaDistance {
    arena: Arc<Arena>,
    metric: Metric,
}

impl Distance<u32> for ArenaDistance {
    fn eval(&self, a: &[u32], b: &[u32]) -> f32 {
        let rows = self.arena.read();
        self.metric.distance(row(&rows, self.arena.dim, a[0]), row(&rows, self.arena.dim, b[0]))
    }
}

pub struct VectorIndex {
    params: HnswParams,
    arena: Arc<Arena>,
    hnsw: Hnsw<'static, u32, ArenaDistance>,
    /// Search copy of the graph, covering points `0..graph.len()`.
    graph: FlatGraph,
    /// Arena slot → the product it belongs to, `None` once stale.
    points: Vec<Option<ProductId>>,
    /// Each product's live point.
    live: HashMap<ProductId, u32>,
}

/// A search hit: the product and its score (cosine similarity, or minus the Euclidean distance;
/// higher is closer either way).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorHit {
    pub product: ProductId,
    pub similarity: f32,
}

/// Scales to unit length; `None` for a zero or non-finite vector, which has no direction.
pub fn normalized(v: &[f32]) -> Option<Vec<f32>> {
    Metric::Cosine.prepare(v)
}

impl VectorIndex {
    pub fn new(dim: usize, params: HnswParams, expected: usize) -> Self {
        let arena = Arc::new(Arena { dim, rows: RwLock::new(Vec::with_capacity(expected * dim)) });
        let distance = ArenaDistance { arena: Arc::clone(&arena), metric: params.metric };
        let hnsw = Hnsw::new(params.m.clamp(2, 256), expected.max(1_000), MAX_LAYERS, params.ef_construction, distance);
        Self { params, arena, hnsw, graph: FlatGraph::default(), points: Vec::new(), live: HashMap::new() }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.arena.dim
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Graph points, stale ones included.
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// The stored vector of a product (unit length under the cosine metric).
    pub fn vector(&self, id: ProductId) -> Option<Vec<f32>> {
        let point = *self.live.get(&id)?;
        Some(row(&self.arena.read(), self.arena.dim, point).to_vec())
    }

    /// Adds or replaces a product's vector. Vectors of the wrong dimension or without direction
    /// are not indexed (the catalog refuses them; this guards the index against old rows).
    pub fn upsert(&mut self, id: ProductId, vector: &[f32]) {
        let Some(prepared) = self.params.metric.prepare(vector).filter(|v| v.len() == self.arena.dim) else {
            self.remove(id);
            return;
        };
        if self.vector(id).is_some_and(|current| current == prepared) {
            return;
        }
        self.remove(id);
        let point = u32::try_from(self.points.len()).expect("fewer than 4 billion points");
        self.arena.rows.write().expect("vector arena lock").extend_from_slice(&prepared);
        self.points.push(Some(id));
        self.hnsw.insert_slice((&[point], point as usize));
        self.live.insert(id, point);
    }

    pub fn remove(&mut self, id: ProductId) {
        if let Some(point) = self.live.remove(&id) {
            self.points[point as usize] = None;
        }
    }

    /// Whether enough points arrived since the last flat copy to make a new one worthwhile.
    pub fn needs_compile(&self) -> bool {
        self.points.len() - self.graph.len() > FRESH_LIMIT
    }

    /// A fresh flat copy of hnsw_rs's graph. Takes `&self` so searches go on meanwhile; install
    /// it with [`VectorIndex::install`] before the next insert.
    pub fn compile(&self) -> FlatGraph {
        let nodes = self.hnsw.get_point_indexation().into_iter().map(|point| NodeLinks {
            node: point.get_origin_id() as u32,
            level: point.get_point_id().0,
            layers: point
                .get_neighborhood_id()
                .into_iter()
                .map(|links| links.into_iter().map(|n| n.d_id as u32).collect())
                .collect(),
        });
        FlatGraph::from_nodes(self.points.len(), self.params.m, nodes)
    }

    pub fn install(&mut self, graph: FlatGraph) {
        self.graph = graph;
    }

    /// Writes the index into `dir` (an empty directory): hnsw_rs's own dump of the graph, plus
    /// the vectors and the point → product table. Returns the files written.
    pub fn dump(&self, dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
        let vectors = dir.join(VECTORS_FILE);
        let mut out = BufWriter::new(std::fs::File::create(&vectors)?);
        for x in self.arena.read().iter() {
            out.write_all(&x.to_le_bytes())?;
        }
        out.flush()?;
        let points = dir.join(POINTS_FILE);
        let mut out = BufWriter::new(std::fs::File::create(&points)?);
        for point in &self.points {
            out.write_all(point.map_or([0; 16], |id| *id.0.as_bytes()).as_slice())?;
        }
        out.flush()?;
        let mut files = vec![vectors, points];
        if !self.points.is_empty() {
            let name = self.hnsw.file_dump(dir, GRAPH_BASENAME)?;
            anyhow::ensure!(name == GRAPH_BASENAME, "hnsw_rs dumped under another name: {name}");
            files.extend(GRAPH_SUFFIXES.iter().map(|suffix| dir.join(format!("{GRAPH_BASENAME}{suffix}"))));
        }
        Ok(files)
    }

    /// Reads an index written by [`VectorIndex::dump`]. The caller has checked the files'
    /// digest; hnsw_rs still asserts on what it reads, so a panic in its loader is an error here.
    pub fn load(dir: &Path, dim: usize, params: HnswParams) -> anyhow::Result<Self> {
        let mut bytes = Vec::new();
        std::fs::File::open(dir.join(POINTS_FILE))?.read_to_end(&mut bytes)?;
        anyhow::ensure!(bytes.len() % 16 == 0, "points file is {} bytes, not a multiple of 16", bytes.len());
        let points: Vec<Option<ProductId>> = bytes
            .chunks_exact(16)
            .map(|raw| {
                let uuid = uuid::Uuid::from_bytes(raw.try_into().expect("16-byte chunk"));
                (!uuid.is_nil()).then_some(ProductId(uuid))
            })
            .collect();
        bytes.clear();
        std::fs::File::open(dir.join(VECTORS_FILE))?.read_to_end(&mut bytes)?;
        anyhow::ensure!(bytes.len() == points.len() * dim * 4, "vectors file does not hold {} × {dim}", points.len());
        let rows: Vec<f32> =
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4-byte chunk"))).collect();
        drop(bytes);
        let mut index = Self::new(dim, params, points.len());
        *index.arena.rows.write().expect("vector arena lock") = rows;
        if !points.is_empty() {
            let distance = ArenaDistance { arena: Arc::clone(&index.arena), metric: params.metric };
            let dir = dir.to_path_buf();
            let loaded = std::panic::catch_unwind(move || {
                // hnsw_rs's reloaded graph borrows its reader for as long as it lives; the reader
                // is small and there is one per start, so it is leaked to make the graph 'static.
                let reader: &'static HnswIo = Box::leak(Box::new(HnswIo::new(&dir, GRAPH_BASENAME)));
                reader.load_hnsw_with_dist::<u32, ArenaDistance>(distance)
            })
            .map_err(|_| anyhow::anyhow!("hnsw_rs could not read the graph"))??;
            anyhow::ensure!(
                loaded.get_nb_point() == points.len(),
                "graph holds {} points, not {}",
                loaded.get_nb_point(),
                points.len()
            );
            index.hnsw = loaded;
            // The reloaded graph comes back with hnsw_rs's reload defaults; inserts should
            // behave as in a fresh one.
            index.hnsw.set_extend_candidates(false);
            index.hnsw.set_keeping_pruned(false);
        }
        index.live = points.iter().enumerate().filter_map(|(point, id)| id.map(|id| (id, point as u32))).collect();
        index.points = points;
        index.install(index.compile());
        Ok(index)
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
        self.search_with_ef(query, k, self.params.ef_search, filter, candidates)
    }

    /// [`VectorIndex::search`] with an explicit beam width (benchmarks sweep it).
    pub fn search_with_ef(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: impl Fn(ProductId) -> bool,
        candidates: Option<&[ProductId]>,
    ) -> Vec<VectorHit> {
        let metric = self.params.metric;
        let dim = self.arena.dim;
        let Some(query) = metric.prepare(query).filter(|q| q.len() == dim) else { return Vec::new() };
        if k == 0 || self.live.is_empty() {
            return Vec::new();
        }
        let rows = self.arena.read();
        let exact = |points: &mut dyn Iterator<Item = u32>| -> Vec<Scored> {
            points.map(|point| Scored { distance: metric.distance(&query, row(&rows, dim, point)), point }).collect()
        };
        let mut found = if let Some(candidates) = candidates.filter(|c| c.len() < EXACT_SCAN_BELOW) {
            exact(&mut candidates.iter().filter(|id| filter(**id)).filter_map(|id| self.live.get(id).copied()))
        } else {
            let accept = |point: u32| self.points[point as usize].is_some_and(&filter);
            let mut found = self.graph.search(metric, |p| row(&rows, dim, p), &query, ef.max(k), accept);
            let fresh = self.graph.len() as u32..self.points.len() as u32;
            found.extend(exact(&mut fresh.filter(|p| accept(*p))));
            found
        };
        found.sort_unstable();
        found
            .into_iter()
            .filter_map(|s| self.points[s.point as usize].map(|product| (product, s.distance)))
            .take(k)
            .map(|(product, distance)| VectorHit { product, similarity: metric.score(distance) })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_vectors_score_one_and_removed_points_never_come_back() {
        let mut index = VectorIndex::new(3, HnswParams::default(), 10);
        let a = ProductId::generate();
        let b = ProductId::generate();
        index.upsert(a, &[0.1, 0.7, 0.3]);
        index.upsert(b, &[0.3, 0.1, 0.7]);
        for compiled in [false, true] {
            if compiled {
                index.install(index.compile());
            }
            let hits = index.search(&[0.1, 0.7, 0.3], 2, |_| true, None);
            assert_eq!(hits[0].product, a);
            assert!((hits[0].similarity - 1.0).abs() < 1e-4, "{hits:?}");
        }
        index.remove(a);
        let hits = index.search(&[0.1, 0.7, 0.3], 2, |_| true, None);
        assert_eq!(hits.iter().map(|h| h.product).collect::<Vec<_>>(), [b], "removed points never come back");
    }

    #[test]
    fn the_l2_metric_ranks_by_euclidean_distance_not_direction() {
        let params = HnswParams { metric: Metric::L2, ..HnswParams::default() };
        let mut index = VectorIndex::new(2, params, 10);
        let near = ProductId::generate();
        let same_direction_far = ProductId::generate();
        index.upsert(near, &[1.0, 1.2]);
        index.upsert(same_direction_far, &[10.0, 10.0]);
        let hits = index.search(&[1.0, 1.0], 2, |_| true, None);
        assert_eq!(hits[0].product, near, "cosine would have tied them");
        assert!((hits[0].similarity + 0.2).abs() < 1e-5, "score is minus the distance: {hits:?}");
    }
}
