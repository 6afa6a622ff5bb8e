//! The search side of the HNSW index: hnsw_rs's layer-0 graph copied into flat arrays and walked
//! by our own search. hnsw_rs keeps every link as its own `Arc` behind a lock and allocates per
//! query; the flat copy keeps each node's links in one fixed-size row and reuses its visited set.
//!
//! The walk does not descend hnsw_rs's upper layers: the crate also files, on layers above a
//! node's own, the entry point its insertion passed through and a link back, so on clustered
//! data those layers lose their real long-range links and a greedy descent ends in the wrong
//! cluster (recall@10 0.61 on the 10k test). Instead the walk starts from the nearest of a
//! small set of pivots — the nodes of the highest layer that still has [`PIVOTS`] of them, a
//! random sample hnsw_rs's level draw already made — which costs a few dozen distances per query.

use std::{cell::RefCell, cmp::Reverse, collections::BinaryHeap};

use super::distance::{Metric, prefetch};

/// A distance that sorts (`total_cmp`), paired with the point it belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub distance: f32,
    pub point: u32,
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.distance.total_cmp(&other.distance).then(self.point.cmp(&other.point))
    }
}

const NO_LINK: u32 = u32::MAX;

/// Wanted number of pivots: enough that one lies near any query, few enough to scan per query.
const PIVOTS: usize = 64;
/// How many of the nearest pivots seed the walk.
const SEEDS: usize = 3;

/// Layer-0 links of every node in one flat array, and the pivots walks start from.
#[derive(Debug, Clone, Default)]
pub struct FlatGraph {
    /// Links per node; `NO_LINK` pads a row.
    width0: usize,
    /// `len × width0` links.
    links0: Vec<u32>,
    pivots: Vec<u32>,
    len: usize,
}

/// One node's links on each of its layers (layer 0 first), as handed over by hnsw_rs.
pub struct NodeLinks {
    pub node: u32,
    /// The highest layer the node is on.
    pub level: u8,
    pub layers: Vec<Vec<u32>>,
}

impl FlatGraph {
    /// Builds the flat copy from every node's links; `width` is hnsw_rs's M (layer 0 has 2M).
    pub fn from_nodes(len: usize, width: usize, nodes: impl IntoIterator<Item = NodeLinks>) -> Self {
        let width0 = width * 2;
        let mut links0 = vec![NO_LINK; len * width0];
        let mut per_level: Vec<Vec<u32>> = Vec::new();
        for NodeLinks { node, level, mut layers } in nodes {
            if node as usize >= len {
                continue;
            }
            let level = usize::from(level);
            if per_level.len() <= level {
                per_level.resize_with(level + 1, Vec::new);
            }
            per_level[level].push(node);
            let base = node as usize * width0;
            let links = if layers.is_empty() { Vec::new() } else { layers.swap_remove(0) };
            for (slot, link) in links.into_iter().filter(|l| (*l as usize) < len).take(width0).enumerate() {
                links0[base + slot] = link;
            }
        }
        // The highest layers first, until there are enough pivots; a layer's nodes are a random
        // draw, so taking only part of the last one is still a fair sample.
        let mut pivots = Vec::new();
        for nodes in per_level.iter().rev() {
            if pivots.len() >= PIVOTS {
                break;
            }
            pivots.extend(nodes.iter().take(2 * PIVOTS - pivots.len()));
        }
        pivots.sort_unstable();
        Self { width0, links0, pivots, len }
    }

    /// How many nodes the graph covers (ids `0..len`).
    pub fn len(&self) -> usize {
        self.len
    }

    fn row0(&self, node: u32) -> &[u32] {
        let base = node as usize * self.width0;
        &self.links0[base..base + self.width0]
    }

    /// The `ef` nearest nodes to `query` that `accept` lets through, nearest first. Rejected
    /// nodes are still walked through, so a filter does not cut the graph apart.
    pub fn search<'v>(
        &self,
        metric: Metric,
        vector: impl Fn(u32) -> &'v [f32] + Copy,
        query: &[f32],
        ef: usize,
        accept: impl Fn(u32) -> bool,
    ) -> Vec<Scored> {
        if self.pivots.is_empty() {
            return Vec::new();
        }
        let distance = |node: u32| metric.distance(query, vector(node));
        let mut seeds: Vec<Scored> =
            self.pivots.iter().map(|&point| Scored { distance: distance(point), point }).collect();
        let nearest = SEEDS.min(seeds.len());
        seeds.select_nth_unstable(nearest - 1);
        seeds.truncate(nearest);
        VISITED.with_borrow_mut(|visited| {
            visited.reset(self.len);
            let mut candidates = BinaryHeap::new();
            let mut results: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef + 1);
            for seed in seeds {
                visited.insert(seed.point);
                candidates.push(Reverse(seed));
                if accept(seed.point) {
                    results.push(seed);
                }
            }
            while let Some(Reverse(current)) = candidates.pop() {
                let bound = results.peek().map_or(f32::INFINITY, |worst| worst.distance);
                if current.distance > bound && results.len() >= ef {
                    break;
                }
                let row = self.row0(current.point);
                if let Some(&first) = row.first().filter(|l| **l != NO_LINK) {
                    prefetch(vector(first));
                }
                for (slot, &next) in row.iter().enumerate() {
                    if next == NO_LINK {
                        break;
                    }
                    if let Some(&after) = row.get(slot + 1).filter(|l| **l != NO_LINK) {
                        prefetch(vector(after));
                    }
                    if !visited.insert(next) {
                        continue;
                    }
                    let d = distance(next);
                    let bound = results.peek().map_or(f32::INFINITY, |worst| worst.distance);
                    if results.len() < ef || d < bound {
                        candidates.push(Reverse(Scored { distance: d, point: next }));
                        if accept(next) {
                            results.push(Scored { distance: d, point: next });
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
            }
            results.into_sorted_vec()
        })
    }
}

/// Which nodes a search has seen, cleared in O(1) by moving to the next epoch.
#[derive(Default)]
struct Visited {
    epoch: u16,
    marks: Vec<u16>,
}

impl Visited {
    fn reset(&mut self, len: usize) {
        if self.marks.len() < len {
            self.marks.resize(len, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `node`; false when it was already marked this epoch.
    fn insert(&mut self, node: u32) -> bool {
        match self.marks.get_mut(node as usize) {
            Some(mark) if *mark != self.epoch => {
                *mark = self.epoch;
                true
            }
            _ => false,
        }
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::new(Visited::default());
}
