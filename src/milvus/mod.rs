//! Milvus: the vector store that scales past one replica (issue 14). Soko keeps it in step with
//! the catalog through the outbox, like the in-process index: the sync worker ([`MilvusSync`])
//! tails the outbox past a watermark stored in the database and upserts or deletes each changed
//! product's entity, re-read from its row, so replaying any part of the outbox changes nothing.
//!
//! Nothing here runs unless `MILVUS_ADDRESS` is set: the embedded default stays one process.

pub mod cli;
mod client;
mod collection;
pub mod reconcile;
pub mod schema;
mod search;
mod sync;

use std::time::Duration;

use client::check;
pub use client::{Milvus, MilvusError};
pub use collection::metric_name;
pub use reconcile::ReconcileReport;
pub use search::MilvusVectors;
pub use sync::{CONSUMER, LEASE_TTL, MilvusSync, MilvusSyncStatus};

use crate::{configuration::Secret, domain::product::Product, vector::distance::Metric};

/// Where Milvus is and how Soko's collection looks in it.
#[derive(Debug, Clone)]
pub struct MilvusConfig {
    /// `MILVUS_ADDRESS`: `host:port` or an `http://` / `https://` URL.
    pub address: String,
    /// `MILVUS_USERNAME` / `MILVUS_PASSWORD`, when Milvus has authentication on.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `MILVUS_TIMEOUT` (seconds): each call, connecting included.
    pub timeout: Duration,
    /// `SOKO_MILVUS_COLLECTION`.
    pub collection: String,
    /// `SOKO_MILVUS_INDEX`: `hnsw` (the default) or `ivf_flat`.
    pub index: IndexKind,
    /// The vector dimension and metric: the same as the local index's.
    pub dim: usize,
    pub metric: Metric,
    /// `SOKO_VECTOR_BACKEND=milvus`: vector queries go to Milvus instead of the local index.
    pub route_search: bool,
    /// Search breadth: HNSW's `ef` (`SOKO_HNSW_EF_SEARCH`, at least `k`), IVF's `nprobe`
    /// (`SOKO_MILVUS_NPROBE`).
    pub ef_search: usize,
    pub nprobe: usize,
    /// `SOKO_MILVUS_RECONCILE_INTERVAL_SECS` (3600 by default, 0 turns it off): how often the
    /// syncing replica compares Milvus with the database and repairs drift.
    pub reconcile_every: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Hnsw { m: usize, ef_construction: usize },
    IvfFlat { nlist: usize },
}

/// One product's entity in the collection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub id: String,
    pub embedding: Vec<f32>,
    pub category: String,
    pub seller: String,
    pub price_minor: i64,
    pub currency: String,
    pub status: String,
}

impl Row {
    /// The entity of a product, or `None` when it has no embedding (and so no place in Milvus).
    pub fn of(product: &Product) -> Option<Self> {
        Some(Self {
            id: product.id.to_string(),
            embedding: product.embedding.clone()?,
            category: product.category_id.to_string(),
            seller: product.seller_id.to_string(),
            price_minor: product.price.amount_minor,
            currency: product.price.currency.as_str().to_owned(),
            status: product.status.as_str().to_owned(),
        })
    }
}
