//! The search side of the HNSW index: hnsw_rs's graph copied into flat arrays and walked by our
//! own search. hnsw_rs keeps every link as its own `Arc` behind a lock and allocates per query;
//! the flat copy keeps each node's links in one fixed-size row, reuses its visited set, and does a
//! full greedy descent through the upper layers (hnsw_rs takes one step per layer). That is where
//! most of the speed over the crate's own `search` comes from (see BENCHMARKS.md).

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

/// Links of every node, layer by layer, in flat arrays.
#[derive(Debug, Clone, Default)]
pub struct FlatGraph {
    /// Links per node on layer 0; `NO_LINK` pads a row.
    width0: usize,
    /// Links per node on the upper layers.
    width: usize,
    /// `len × width0` layer-0 links.
    links0: Vec<u32>,
    /// Upper layers: `upper[l - 1]` maps a node's slot on layer `l` to its row of `width` links.
    upper: Vec<UpperLayer>,
    entry: Option<u32>,
    len: usize,
}

#[derive(Debug, Clone, Default)]
struct UpperLayer {
    /// Sorted node ids present on this layer; a node's row is its position here.
    nodes: Vec<u32>,
    links: Vec<u32>,
}

impl UpperLayer {
    fn row(&self, node: u32, width: usize) -> &[u32] {
        match self.nodes.binary_search(&node) {
            Ok(slot) => &self.links[slot * width..(slot + 1) * width],
            Err(_) => &[],
        }
    }
}

/// One node's links on each of its layers (layer 0 first), as handed over by hnsw_rs.
pub struct NodeLinks {
    pub node: u32,
    /// The highest layer the node is on.
    pub level: u8,
    pub layers: Vec<Vec<u32>>,
}

impl FlatGraph {
    /// Builds the flat copy from every node's links. `entry` must be a node on the top layer.
    pub fn from_nodes(
        len: usize,
        width: usize,
        entry: Option<u32>,
        nodes: impl IntoIterator<Item = NodeLinks>,
    ) -> Self {
        let width0 = width * 2;
        let mut links0 = vec![NO_LINK; len * width0];
        let nodes: Vec<NodeLinks> = nodes.into_iter().filter(|n| (n.node as usize) < len).collect();
        let mut levels = vec![0u8; len];
        for n in &nodes {
            levels[n.node as usize] = n.level;
        }
        let mut upper_rows: Vec<Vec<(u32, Vec<u32>)>> = Vec::new();
        for NodeLinks { node, level, layers } in nodes {
            let base = node as usize * width0;
            // hnsw_rs also records, on layers above a node's own, the entry point its insertion
            // passed through (and links back to it): those are not graph edges on that layer, and
            // a descent that follows them ends far from the query.
            for (layer, links) in layers.into_iter().enumerate().take(usize::from(level) + 1) {
                let links: Vec<u32> = links
                    .into_iter()
                    .filter(|l| levels.get(*l as usize).is_some_and(|lv| usize::from(*lv) >= layer))
                    .collect();
                if layer == 0 {
                    for (slot, link) in links.into_iter().take(width0).enumerate() {
                        links0[base + slot] = link;
                    }
                } else {
                    if upper_rows.len() < layer {
                        upper_rows.resize_with(layer, Vec::new);
                    }
                    upper_rows[layer - 1].push((node, links));
                }
            }
        }
        let upper = upper_rows
            .into_iter()
            .map(|mut rows| {
                rows.sort_by_key(|(node, _)| *node);
                let mut layer = UpperLayer { nodes: Vec::with_capacity(rows.len()), links: Vec::new() };
                for (node, links) in rows {
                    layer.nodes.push(node);
                    let mut row: Vec<u32> = links.into_iter().take(width).collect();
                    row.resize(width, NO_LINK);
                    layer.links.extend(row);
                }
                layer
            })
            .collect();
        Self { width0, width, links0, upper, entry, len }
    }

    /// How many nodes the graph covers (ids `0..len`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by the link arrays.
    pub fn heap_bytes(&self) -> usize {
        self.links0.capacity() * 4
            + self.upper.iter().map(|l| (l.nodes.capacity() + l.links.capacity()) * 4).sum::<usize>()
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
        let Some(mut entry) = self.entry else { return Vec::new() };
        let distance = |node: u32| metric.distance(query, vector(node));
        // Greedy descent: on each upper layer move to the closest neighbour until none is closer.
        let mut best = distance(entry);
        for layer in self.upper.iter().rev() {
            loop {
                let mut moved = false;
                for &next in layer.row(entry, self.width).iter().take_while(|l| **l != NO_LINK) {
                    let d = distance(next);
                    if d < best {
                        (best, entry, moved) = (d, next, true);
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        VISITED.with_borrow_mut(|visited| {
            visited.reset(self.len);
            let mut candidates = BinaryHeap::new();
            let mut results: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef + 1);
            let start = Scored { distance: best, point: entry };
            visited.insert(entry);
            candidates.push(Reverse(start));
            if accept(entry) {
                results.push(start);
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
