//! Reconciliation: Milvus compared with the products table, and drift repaired both ways. The
//! outbox keeps Milvus right as long as nobody changes either side behind Soko's back; this pass
//! catches what did (an entity inserted or deleted by hand, a restore, a collection dropped and
//! recreated).
//!
//! It runs in the sync worker, between batches, on the replica holding the lease: so no batch
//! interleaves with it, and any write it read too early is re-applied by the batches after it
//! (they re-read their products). It runs every `SOKO_MILVUS_RECONCILE_INTERVAL_SECS`, and on
//! request: AdminService `Reindex` (target MILVUS or ALL) and `soko milvus reconcile` write a
//! request into `cluster_settings`, which the holder picks up within seconds.

use std::collections::{BTreeSet, HashMap};

use super::{Milvus, MilvusError, Row, schema, sync::SyncError};
use crate::{
    domain::product::{ProductId, Timestamp, Visibility},
    store::{Db, settings::SettingRow},
};

/// The setting a reconcile request is written to (its value: the request's id).
pub const REQUEST: &str = "milvus_reconcile";
/// The setting the holder writes when it finished one (its value: the request's id and counts).
pub const DONE: &str = "milvus_reconciled";
/// Products compared per round trip.
const PAGE: i64 = 500;
/// The most ids one Milvus query returns; a collection larger than this is listed by id prefix.
const QUERY_LIMIT: i64 = 16_384;

/// What a reconciliation found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Live products with an embedding, compared with their entity.
    pub checked: u64,
    /// Entities written because they were missing or differed from the product.
    pub upserted: u64,
    /// Entities removed because no live product with an embedding has their id.
    pub deleted: u64,
}

impl std::fmt::Display for ReconcileReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "checked={} upserted={} deleted={}", self.checked, self.upserted, self.deleted)
    }
}

/// Compares every product with Milvus and repairs the differences.
pub async fn reconcile(db: &Db, milvus: &Milvus) -> Result<ReconcileReport, SyncError> {
    let mut report = ReconcileReport::default();
    // The database's side: every live product's entity present and equal, page by page.
    let mut after = None;
    loop {
        let page = db.products_after(after, PAGE).await?;
        let Some(last) = page.last().map(|p| p.id) else { break };
        after = Some(last);
        let expected: HashMap<String, Row> = page.iter().filter_map(Row::of).map(|r| (r.id.clone(), r)).collect();
        let ids: Vec<String> = page.iter().map(|p| p.id.to_string()).collect();
        let stored: HashMap<String, Row> = milvus
            .query(&schema::ids_expr(&ids), schema::ALL_FIELDS)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        report.checked += expected.len() as u64;
        let stale: Vec<Row> = expected.values().filter(|row| stored.get(&row.id) != Some(*row)).cloned().collect();
        // Products that lost their embedding keep no entity.
        let unembedded: Vec<String> = stored.keys().filter(|id| !expected.contains_key(*id)).cloned().collect();
        report.upserted += stale.len() as u64;
        report.deleted += unembedded.len() as u64;
        milvus.upsert(&stale).await?;
        milvus.delete(&unembedded).await?;
    }
    // Milvus's side: every entity must be a live product with an embedding.
    for prefixes in id_buckets(milvus).await? {
        let ids = milvus.query(&prefixes, &[schema::ID]).await?;
        for chunk in ids.chunks(PAGE as usize) {
            let parsed: Vec<ProductId> = chunk.iter().filter_map(|r| r.id.parse().ok()).collect();
            let live: BTreeSet<String> = db
                .get_products(&parsed, Visibility::Everything)
                .await?
                .into_iter()
                .filter(|(p, _)| p.embedding.is_some())
                .map(|(p, _)| p.id.to_string())
                .collect();
            // Ids that are not product ids at all were never Soko's: they go too.
            let extra: Vec<String> = chunk.iter().map(|r| r.id.clone()).filter(|id| !live.contains(id)).collect();
            report.deleted += extra.len() as u64;
            delete_any(milvus, &extra).await?;
        }
    }
    Ok(report)
}

/// Expressions that together list every entity, each matching at most [`QUERY_LIMIT`]: the
/// whole collection when it is small enough, else slices by the first characters of the id.
async fn id_buckets(milvus: &Milvus) -> Result<Vec<String>, MilvusError> {
    let total = milvus.count().await?;
    if total < QUERY_LIMIT {
        return Ok(vec![format!("{} != \"\"", schema::ID)]);
    }
    // Product ids are lower-case hex UUIDs: 256 two-character prefixes, plus whatever else.
    let hex = "0123456789abcdef";
    let mut buckets: Vec<String> =
        hex.chars().flat_map(|a| hex.chars().map(move |b| format!("{} like \"{a}{b}%\"", schema::ID))).collect();
    let not_hex: Vec<String> = hex.chars().map(|c| format!("not ({} like \"{c}%\")", schema::ID)).collect();
    buckets.push(not_hex.join(" && "));
    Ok(buckets)
}

/// Deletes entities by id, whatever their ids look like (a planted entity need not have a UUID).
async fn delete_any(milvus: &Milvus, ids: &[String]) -> Result<(), MilvusError> {
    let (clean, odd): (Vec<String>, Vec<String>) =
        ids.iter().cloned().partition(|id| id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    milvus.delete(&clean).await?;
    for id in odd {
        milvus.delete_where(&format!("{} == {}", schema::ID, schema::literal(&id))).await?;
    }
    Ok(())
}

/// A reconcile request, as `Reindex` and `soko milvus reconcile` write it.
pub async fn request(db: &Db, by: &str, reason: &str) -> Result<String, crate::store::StoreError> {
    let id = uuid::Uuid::now_v7().to_string();
    db.put_setting(&SettingRow {
        name: REQUEST.into(),
        value: id.clone(),
        reason: reason.into(),
        updated_at: Timestamp::now().0,
        updated_by: by.into(),
    })
    .await?;
    Ok(id)
}
