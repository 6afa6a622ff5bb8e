//! The vector engine: an approximate nearest-neighbour index over embeddings (a proximity graph
//! walked on int8 codes, re-ranked on half-precision vectors), its distances, its snapshots on
//! disk, and the synthetic data its tests and benchmarks use. It knows nothing of products, the
//! catalog or the database: it holds vectors under 16-byte keys that its caller chooses
//! ([`Key`]). The search service (`crate::search`) keeps one per replica, fed by the outbox.

pub mod distance;
mod graph;
mod index;
pub mod snapshot;
mod store;
pub mod synthetic;

pub use index::{BULK_MIN, EXACT_SCAN_BELOW, HnswParams, VectorHit, VectorIndex, normalized};

/// What a vector is stored under: a 16-byte id of the caller's (a UUID), of which all zeros is
/// never one (snapshots mark stale points with it).
pub trait Key: Copy + Eq + std::hash::Hash + Send + Sync + std::fmt::Debug + 'static {
    fn to_bytes(self) -> [u8; 16];
    fn from_bytes(bytes: [u8; 16]) -> Self;
}

impl Key for uuid::Uuid {
    fn to_bytes(self) -> [u8; 16] {
        self.into_bytes()
    }

    fn from_bytes(bytes: [u8; 16]) -> Self {
        uuid::Uuid::from_bytes(bytes)
    }
}
