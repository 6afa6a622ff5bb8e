//! The proximity graph searches walk: every node's neighbours in one flat array of fixed-width
//! rows, and a sample of nodes ("pivots") walks start from.
//!
//! hnsw_rs builds the graph in bulk (see `index.rs`); its layer 0 is copied here and the crate's
//! structure dropped. Later inserts go straight into this graph, the way HNSW inserts into its
//! layer 0: a walk for `ef_construction` candidates, the diversity heuristic to pick links, and
//! links back, re-pruned with the same heuristic when a row is full.
//!
//! There are no upper layers. hnsw_rs files, on layers above a node's own, the entry point its
//! insertion passed through and a link back, so on clustered data its upper layers lose their
//! long-range links and a greedy descent ends in the wrong cluster. Walks start instead from the
//! nearest few of a spread-out sample of nodes, which costs a hundred cheap int8 comparisons.

use std::{cell::RefCell, cmp::Reverse, collections::BinaryHeap};

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

pub const NO_LINK: u32 = u32::MAX;

/// How many of the nearest pivots seed a walk.
const SEEDS: usize = 3;

/// How many pivots a graph of `len` nodes gets: one per thousand nodes, at least 32 so small
/// graphs are entered from several places, at most 128 so scanning them stays cheap.
fn pivot_count(len: usize) -> usize {
    (len / 1_000).clamp(32, 128)
}

/// What the graph needs to know about the points it links.
pub trait Space {
    /// Distance from the current query to `point`.
    fn to_query(&self, point: u32) -> f32;
    /// Distance between two points.
    fn between(&self, a: u32, b: u32) -> f32;
    fn prefetch(&self, point: u32);
}

#[derive(Debug, Clone)]
pub struct Graph {
    /// Links per row: 2M, as on HNSW's layer 0.
    width: usize,
    /// `len × width` links; `NO_LINK` pads a row.
    links: Vec<u32>,
    pivots: Vec<u32>,
    /// Graph size when the pivots were last drawn; they are drawn again when it doubles.
    pivots_for: usize,
}

impl Graph {
    /// An empty graph whose nodes get up to `2 m` links.
    pub fn new(m: usize) -> Self {
        Self { width: 2 * m.max(1), links: Vec::new(), pivots: Vec::new(), pivots_for: 0 }
    }

    /// A graph from stored rows (`len × 2m` links, `NO_LINK` padding); dangling links are dropped.
    pub fn from_links(m: usize, mut links: Vec<u32>, live: impl Fn(u32) -> bool) -> anyhow::Result<Self> {
        let mut graph = Self::new(m);
        anyhow::ensure!(
            links.len().is_multiple_of(graph.width),
            "{} links are not rows of {}",
            links.len(),
            graph.width
        );
        let len = (links.len() / graph.width) as u32;
        links.iter_mut().filter(|l| **l != NO_LINK && **l >= len).for_each(|l| *l = NO_LINK);
        graph.links = links;
        graph.draw_pivots(live);
        Ok(graph)
    }

    pub fn len(&self) -> usize {
        self.links.len() / self.width
    }

    pub fn links(&self) -> &[u32] {
        &self.links
    }

    fn row(&self, node: u32) -> &[u32] {
        let base = node as usize * self.width;
        &self.links[base..base + self.width]
    }

    fn row_mut(&mut self, node: u32) -> &mut [u32] {
        let base = node as usize * self.width;
        &mut self.links[base..base + self.width]
    }

    /// Adds a node with the given links (at most the row width are kept).
    pub fn push(&mut self, links: impl IntoIterator<Item = u32>) {
        let start = self.links.len();
        self.links.extend(links.into_iter().take(self.width));
        self.links.resize(start + self.width, NO_LINK);
    }

    /// Spreads pivots evenly over the live nodes.
    pub fn draw_pivots(&mut self, live: impl Fn(u32) -> bool) {
        let len = self.len();
        let want = pivot_count(len);
        let step = (len / want).max(1);
        self.pivots = (0..len as u32).step_by(step).filter(|n| live(*n)).take(want).collect();
        if self.pivots.is_empty() {
            self.pivots = (0..len as u32).filter(|n| live(*n)).take(want).collect();
        }
        self.pivots_for = len;
    }

    /// The `ef` nearest nodes to the query that `accept` lets through, nearest first. Rejected
    /// nodes are still walked through, so a filter does not cut the graph apart.
    pub fn walk(&self, space: &impl Space, ef: usize, accept: impl Fn(u32) -> bool) -> Vec<Scored> {
        if self.pivots.is_empty() || ef == 0 {
            return Vec::new();
        }
        let mut seeds: Vec<Scored> =
            self.pivots.iter().map(|&point| Scored { distance: space.to_query(point), point }).collect();
        let nearest = SEEDS.min(seeds.len());
        seeds.select_nth_unstable(nearest - 1);
        seeds.truncate(nearest);
        VISITED.with_borrow_mut(|visited| {
            visited.reset(self.len());
            let mut candidates = BinaryHeap::with_capacity(ef * 2);
            let mut results: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef + 1);
            for seed in seeds {
                visited.insert(seed.point);
                candidates.push(Reverse(seed));
                if accept(seed.point) {
                    results.push(seed);
                }
            }
            let mut bound = results.peek().map_or(f32::INFINITY, |worst| worst.distance);
            while let Some(Reverse(current)) = candidates.pop() {
                if current.distance > bound && results.len() >= ef {
                    break;
                }
                // Only unseen neighbours are fetched: on a converging walk most links point back
                // into nodes already scored, and prefetching their codes was wasted bandwidth.
                let row = self.row(current.point);
                visited.fresh.clear();
                for &next in row.iter().take_while(|l| **l != NO_LINK) {
                    if visited.insert(next) {
                        visited.fresh.push(next);
                    }
                }
                if let Some(&first) = visited.fresh.first() {
                    space.prefetch(first);
                }
                for (slot, &next) in visited.fresh.iter().enumerate() {
                    if let Some(&after) = visited.fresh.get(slot + 1) {
                        space.prefetch(after);
                    }
                    let d = space.to_query(next);
                    if results.len() < ef || d < bound {
                        candidates.push(Reverse(Scored { distance: d, point: next }));
                        if accept(next) {
                            results.push(Scored { distance: d, point: next });
                            if results.len() > ef {
                                results.pop();
                            }
                            bound = results.peek().map_or(f32::INFINITY, |worst| worst.distance);
                        }
                    }
                }
            }
            results.into_sorted_vec()
        })
    }

    /// Links a new node (the next id, `self.len()`) into the graph. `space`'s query is the new
    /// node's vector; `linkable` says which nodes may be linked to (not stale ones).
    pub fn insert(&mut self, space: &impl Space, m: usize, ef_construction: usize, linkable: impl Fn(u32) -> bool) {
        let node = self.len() as u32;
        let found = self.walk(space, ef_construction.max(m), &linkable);
        let chosen = diverse(&found, m, space);
        self.push(chosen.iter().map(|s| s.point));
        for near in chosen {
            let row = self.row_mut(near.point);
            if let Some(free) = row.iter_mut().find(|l| **l == NO_LINK) {
                *free = node;
                continue;
            }
            // A full row: the most diverse links among the old ones and the new node, topped up
            // with the nearest of the rest, so only the farthest redundant link goes.
            let mut candidates: Vec<Scored> = row
                .iter()
                .map(|&point| Scored { distance: space.between(near.point, point), point })
                .chain([Scored { distance: near.distance, point: node }])
                .collect();
            candidates.sort_unstable();
            let kept = diverse(&candidates, self.width, space);
            let row = self.row_mut(near.point);
            row.fill(NO_LINK);
            row.iter_mut().zip(kept).for_each(|(slot, s)| *slot = s.point);
        }
        if self.pivots.is_empty() || self.len() >= 2 * self.pivots_for {
            self.draw_pivots(&linkable);
        }
    }
}

/// HNSW's neighbour heuristic, topped up: walking `sorted` nearest first, take a candidate if
/// it is closer to the query than to every one taken so far, so links point in different
/// directions instead of all into the nearest clump; then fill the remaining places with the
/// nearest of the rest. (The heuristic alone left new nodes, and the rows hnsw_rs had filled
/// with near neighbours, with a handful of links: recall@10 after one-by-one inserts fell to
/// 0.943 on the 10k test.)
fn diverse(sorted: &[Scored], keep: usize, space: &impl Space) -> Vec<Scored> {
    let mut chosen: Vec<Scored> = Vec::with_capacity(keep);
    let mut skipped: Vec<Scored> = Vec::new();
    for candidate in sorted {
        if chosen.len() >= keep {
            break;
        }
        if chosen.iter().all(|kept| space.between(candidate.point, kept.point) > candidate.distance) {
            chosen.push(*candidate);
        } else {
            skipped.push(*candidate);
        }
    }
    let room = keep.saturating_sub(chosen.len());
    chosen.extend(skipped.into_iter().take(room));
    chosen
}

/// Which nodes a walk has seen, cleared in O(1) by moving to the next epoch.
#[derive(Default)]
struct Visited {
    epoch: u16,
    marks: Vec<u16>,
    /// The current node's neighbours not seen before, reused between steps.
    fresh: Vec<u32>,
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
