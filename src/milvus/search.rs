//! Vector search through Milvus (`SOKO_VECTOR_BACKEND=milvus`): the search service's filter as a
//! Milvus boolean expression, a strongly consistent search, and every returned id re-checked
//! against the products table, so a product deleted or unpublished since Milvus last heard of
//! it never comes back, even when the delete and the search race.

use std::{collections::HashMap, sync::Arc};

use futures_util::future::BoxFuture;

use super::{Milvus, schema};
use crate::{
    breaker::CircuitBreaker,
    domain::{
        listing::ProductFilter,
        product::{Product, ProductId, ProductStatus, Visibility},
    },
    search::{RemoteVectors, text},
    store::Db,
};

/// Extra candidates asked for beyond `k`, so that the few a re-check drops (a delete racing the
/// search) do not leave the answer short.
const RECHECK_MARGIN: usize = 8;

pub struct MilvusVectors {
    milvus: Milvus,
    /// The request path's connections: the re-check is part of answering the call.
    db: Db,
    /// Shared with the sync worker: one view of whether Milvus answers.
    breaker: Arc<CircuitBreaker>,
}

impl MilvusVectors {
    pub fn new(milvus: Milvus, db: Db, breaker: Arc<CircuitBreaker>) -> Self {
        Self { milvus, db, breaker }
    }
}

impl RemoteVectors for MilvusVectors {
    fn nearest<'a>(
        &'a self,
        query: &'a [f32],
        k: usize,
        filter: &'a ProductFilter,
        exclude: Option<ProductId>,
    ) -> BoxFuture<'a, anyhow::Result<Vec<(Product, f32)>>> {
        Box::pin(async move {
            if !self.breaker.allows() {
                anyhow::bail!("Milvus's circuit breaker is open after repeated failures");
            }
            let expr = schema::filter_expr(filter, exclude);
            let hits = match self.milvus.search(query, k + RECHECK_MARGIN, &expr).await {
                Ok(hits) => {
                    self.breaker.succeeded();
                    hits
                }
                Err(e) => {
                    if e.is_transient() {
                        self.breaker.failed(&e);
                    }
                    return Err(e.into());
                }
            };
            // The contract's score: cosine similarity, or minus the Euclidean distance (Milvus
            // answers the squared distance for L2).
            let l2 = self.milvus.config().metric == crate::vector::distance::Metric::L2;
            let hits: Vec<(String, f32)> =
                hits.into_iter().map(|(id, d)| (id, if l2 { -d.max(0.0).sqrt() } else { d })).collect();
            let ids: Vec<ProductId> = hits.iter().filter_map(|(id, _)| id.parse().ok()).collect();
            let mut live: HashMap<ProductId, Product> = self
                .db
                .get_products(&ids, Visibility::Everything)
                .await?
                .into_iter()
                .map(|(p, _)| (p.id, p))
                .filter(|(_, p)| p.status == ProductStatus::Active && text::matches(filter, p))
                .collect();
            Ok(hits
                .into_iter()
                .filter_map(|(id, score)| live.remove(&id.parse().ok()?).map(|p| (p, score)))
                .filter(|(p, _)| Some(p.id) != exclude)
                .take(k)
                .collect())
        })
    }
}
