//! How the vector index keeps its vectors: twice, at two precisions.
//!
//! - An **int8 code** per vector (scaled by its own largest component) for the graph walk. A
//!   768-d code is 768 bytes, a quarter of the f32 vector, so four times as many fit in cache
//!   and each comparison is a few AVX2 integer instructions. Its error (about 5e-4 on a cosine)
//!   is far below the gap between neighbours, so the walk goes where an exact one would.
//! - The vector in **IEEE half precision** for the exact re-rank of the walk's candidates and for
//!   the scores clients see (relative error 2^-11 per component, about 1e-5 on a cosine).
//!
//! Together 2.3 KB per 768-d vector instead of 3 KB for the f32 vector alone. Half precision
//! tops out at 65504, so callers must refuse values beyond it (the catalog does:
//! `EMBEDDING_VALUE_MAX`).

use super::distance::{Metric, dot_half, dot_i8, from_half, l2_half, prefetch_bytes, to_half};

/// Codes are padded with zeros to this many lanes, so the AVX2 kernel never takes its tail.
const LANES: usize = 64;

pub struct Store {
    dim: usize,
    stride: usize,
    metric: Metric,
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// Squared length of each stored vector (what L2 needs besides the dot product).
    norms: Vec<f32>,
    halves: Vec<u16>,
}

/// A query prepared for both passes.
pub struct Query {
    full: Vec<f32>,
    code: Vec<i8>,
    scale: f32,
    norm: f32,
}

/// Symmetric per-vector quantisation: `v ≈ scale × code`, codes in `-127..=127`.
fn quantize(v: &[f32], stride: usize) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let mut code: Vec<i8> = v.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect();
    code.resize(stride, 0);
    (code, scale)
}

impl Store {
    pub fn new(dim: usize, metric: Metric, capacity: usize) -> Self {
        let stride = dim.div_ceil(LANES) * LANES;
        Self {
            dim,
            stride,
            metric,
            codes: Vec::with_capacity(capacity * stride),
            scales: Vec::with_capacity(capacity),
            norms: Vec::with_capacity(capacity),
            halves: Vec::with_capacity(capacity * dim),
        }
    }

    /// A store holding the given half-precision rows (as [`Store::halves`] returned them).
    pub fn from_halves(dim: usize, metric: Metric, halves: &[u16]) -> Self {
        let mut store = Self::new(dim, metric, halves.len() / dim.max(1));
        for row in halves.chunks_exact(dim.max(1)) {
            store.push_halves(row);
        }
        store
    }

    pub fn len(&self) -> usize {
        self.scales.len()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Every stored row in half precision, row after row.
    pub fn halves(&self) -> &[u16] {
        &self.halves
    }

    /// Appends a vector (already prepared for the metric) and returns its slot.
    pub fn push(&mut self, v: &[f32]) -> u32 {
        let halves: Vec<u16> = v.iter().map(|x| to_half(*x)).collect();
        self.push_halves(&halves)
    }

    fn push_halves(&mut self, halves: &[u16]) -> u32 {
        let slot = u32::try_from(self.len()).expect("fewer than 4 billion vectors");
        // Codes come from the rounded vector, so both passes see the same point.
        let rounded: Vec<f32> = halves.iter().map(|h| from_half(*h)).collect();
        let (code, scale) = quantize(&rounded, self.stride);
        self.codes.extend_from_slice(&code);
        self.scales.push(scale);
        self.norms.push(rounded.iter().map(|x| x * x).sum());
        self.halves.extend_from_slice(halves);
        slot
    }

    /// The stored vector of `slot`.
    pub fn vector(&self, slot: u32) -> Vec<f32> {
        self.half_row(slot).iter().map(|h| from_half(*h)).collect()
    }

    /// Whether `slot` already holds `v` (to half precision).
    pub fn holds(&self, slot: u32, v: &[f32]) -> bool {
        self.half_row(slot).iter().zip(v).all(|(h, x)| *h == to_half(*x))
    }

    fn half_row(&self, slot: u32) -> &[u16] {
        let start = slot as usize * self.dim;
        &self.halves[start..start + self.dim]
    }

    fn code(&self, slot: u32) -> &[i8] {
        let start = slot as usize * self.stride;
        &self.codes[start..start + self.stride]
    }

    /// `v` (prepared for the metric) ready to compare against stored vectors.
    pub fn query(&self, v: &[f32]) -> Query {
        let (code, scale) = quantize(v, self.stride);
        Query { norm: v.iter().map(|x| x * x).sum(), full: v.to_vec(), code, scale }
    }

    /// The stored vector of `slot` as a query (inserts search for their own neighbours).
    pub fn query_for(&self, slot: u32) -> Query {
        let s = slot as usize;
        Query { full: self.vector(slot), code: self.code(slot).to_vec(), scale: self.scales[s], norm: self.norms[s] }
    }

    fn distance_from_dot(&self, dot: f32, norm_a: f32, norm_b: f32) -> f32 {
        match self.metric {
            Metric::Cosine => (1.0 - dot).max(0.0),
            Metric::L2 => (norm_a + norm_b - 2.0 * dot).max(0.0),
        }
    }

    /// Approximate distance from the int8 codes: the graph walk's measure.
    #[inline]
    pub fn approx(&self, q: &Query, slot: u32) -> f32 {
        let s = slot as usize;
        let dot = dot_i8(&q.code, self.code(slot)) as f32 * q.scale * self.scales[s];
        self.distance_from_dot(dot, q.norm, self.norms[s])
    }

    /// Approximate distance between two stored vectors.
    #[inline]
    pub fn approx_between(&self, a: u32, b: u32) -> f32 {
        let (sa, sb) = (a as usize, b as usize);
        let dot = dot_i8(self.code(a), self.code(b)) as f32 * self.scales[sa] * self.scales[sb];
        self.distance_from_dot(dot, self.norms[sa], self.norms[sb])
    }

    /// Distance from the half-precision vector: what results are ranked and scored by.
    #[inline]
    pub fn exact(&self, q: &Query, slot: u32) -> f32 {
        match self.metric {
            Metric::Cosine => (1.0 - dot_half(&q.full, self.half_row(slot))).max(0.0),
            Metric::L2 => l2_half(&q.full, self.half_row(slot)),
        }
    }

    /// Starts loading `slot`'s code into cache ahead of its comparison.
    #[inline(always)]
    pub fn prefetch(&self, slot: u32) {
        let start = slot as usize * self.stride;
        if let Some(code) = self.codes.get(start..start + self.stride) {
            prefetch_bytes(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::synthetic::Mixture;

    #[test]
    fn both_passes_agree_with_the_f32_distance() {
        let mut mixture = Mixture::embedding_like(7, 768);
        for metric in [Metric::Cosine, Metric::L2] {
            let mut store = Store::new(768, metric, 100);
            let base: Vec<Vec<f32>> = (0..100).map(|_| mixture.sample()).collect();
            for v in &base {
                store.push(v);
            }
            let query = mixture.sample();
            let q = store.query(&query);
            for (slot, v) in base.iter().enumerate() {
                let truth = metric.distance(&query, v);
                let exact = store.exact(&q, slot as u32);
                let approx = store.approx(&q, slot as u32);
                assert!((exact - truth).abs() < 1e-4, "{metric:?} exact {exact} vs {truth}");
                assert!((approx - truth).abs() < 5e-3, "{metric:?} approx {approx} vs {truth}");
            }
            assert!(store.approx_between(3, 3) < 5e-3);
            let restored = Store::from_halves(768, metric, store.halves());
            assert_eq!(restored.vector(42), store.vector(42));
        }
    }
}
