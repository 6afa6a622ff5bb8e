//! Rebuilding the index from the database without a pause in search, and the figures that say
//! how far the index is behind the catalog.
//!
//! A rebuild reads every live product into a new text index and a new vector index beside the
//! serving ones, which go on answering (and following the outbox) meanwhile. The new pair is then
//! swapped in, and the follower rewinds to where it stood when the rebuild began, so every write
//! made during the rebuild is applied again to the new index. Applying an event re-reads the
//! product, so applying one twice changes nothing. The price is memory: both indexes exist until
//! the swap.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{BATCH, SearchEngine, position_digest, text::TextIndex};
use crate::vector::VectorIndex;
use crate::{
    domain::product::{ProductStatus, Timestamp},
    store::StoreError,
};

/// What the follower last did, for the sync status.
#[derive(Debug, Default)]
pub(super) struct SyncInfo {
    watermark: i64,
    last_apply: Option<Timestamp>,
    /// The last catch-up's error; cleared by the next one that succeeds.
    last_error: Option<String>,
}

impl SyncInfo {
    pub(super) fn caught_up(&mut self, watermark: i64, applied: usize) {
        self.watermark = watermark;
        self.last_error = None;
        if applied > 0 {
            self.last_apply = Some(Timestamp::now());
        }
    }

    pub(super) fn failed(&mut self, error: &StoreError) {
        self.last_error = Some(error.to_string());
    }
}

/// How far this replica's index is behind the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncStatus {
    /// The newest outbox id.
    pub head: i64,
    /// Every event up to here is in the index.
    pub watermark: i64,
    /// Age of the oldest event past the watermark; zero when caught up.
    pub lag: Duration,
    pub vector_count: usize,
    pub last_apply: Option<Timestamp>,
    pub last_error: Option<String>,
    /// Whether the first catch-up after start has finished.
    pub ready: bool,
}

/// A rebuild's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexProgress {
    pub running: bool,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Products read into the new index so far; the graph is built after the last one.
    pub indexed: u64,
    /// Live products when the rebuild started.
    pub total: u64,
    pub error: Option<String>,
}

impl SearchEngine {
    /// Starts a rebuild in the background and returns its progress, or `None` when one is
    /// already running on this replica.
    pub fn start_reindex(self: &Arc<Self>) -> Option<ReindexProgress> {
        let progress = {
            let mut slot = self.reindex.lock().expect("reindex lock");
            if slot.as_ref().is_some_and(|p| p.running) {
                return None;
            }
            let progress = ReindexProgress {
                running: true,
                started_at: Timestamp::now(),
                finished_at: None,
                indexed: 0,
                total: 0,
                error: None,
            };
            *slot = Some(progress.clone());
            progress
        };
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let started = Instant::now();
            let result = engine.rebuild().await;
            let mut slot = engine.reindex.lock().expect("reindex lock");
            if let Some(progress) = slot.as_mut() {
                progress.running = false;
                progress.finished_at = Some(Timestamp::now());
                match result {
                    Ok(()) => tracing::info!(
                        products = progress.indexed,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "search index rebuilt and swapped in"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "rebuilding the search index failed; the old index keeps serving");
                        progress.error = Some(e.to_string());
                    }
                }
            }
        });
        Some(progress)
    }

    /// The running or last rebuild on this replica; `None` if none since start.
    pub fn reindex_progress(&self) -> Option<ReindexProgress> {
        self.reindex.lock().expect("reindex lock").clone()
    }

    fn update_progress(&self, update: impl FnOnce(&mut ReindexProgress)) {
        if let Some(progress) = self.reindex.lock().expect("reindex lock").as_mut() {
            update(progress);
        }
    }

    async fn rebuild(self: &Arc<Self>) -> Result<(), StoreError> {
        self.rebuild_index(0).await?;
        self.catch_up().await?;
        Ok(())
    }

    /// Builds a new index from the products table and swaps it in, leaving the follower to
    /// replay what came after; from `compacted_through` at least, since the events up to there
    /// are gone from the outbox and the scan covers them.
    pub(super) async fn rebuild_index(self: &Arc<Self>, compacted_through: i64) -> Result<(), StoreError> {
        // Everything up to here is in the products table as the scan below will read it; the
        // follower replays whatever comes after once the new index is in.
        let rewind_to = self.follow.lock().await.cursor.watermark();
        let total = self.db.count_products().await?;
        self.update_progress(|p| p.total = u64::try_from(total).unwrap_or(0));
        let mut text = TextIndex::default();
        let mut embeddings = Vec::new();
        let mut after = None;
        loop {
            let page = self.db.products_after(after, BATCH).await?;
            let Some(last) = page.last().map(|p| p.id) else { break };
            let read = page.len() as u64;
            for product in page.into_iter().filter(|p| p.status == ProductStatus::Active) {
                if let Some(embedding) = &product.embedding {
                    embeddings.push((product.id, embedding.clone()));
                }
                text.upsert(product);
            }
            self.update_progress(|p| p.indexed += read);
            after = Some(last);
        }
        let (dim, params) = {
            let vectors = self.vectors.read().expect("index lock");
            (vectors.dim(), vectors.params())
        };
        let vectors = tokio::task::spawn_blocking(move || VectorIndex::build(dim, params, embeddings))
            .await
            .map_err(|e| StoreError::Unexpected(anyhow::anyhow!("building the vector index panicked: {e}")))?;

        let mut state = self.follow.lock().await;
        *self.text.write().expect("index lock") = text;
        *self.vectors.write().expect("index lock") = vectors;
        state.cursor.rewind(rewind_to);
        state.cursor.skip_to(compacted_through);
        // The table was just read whole; a snapshot's pending text load is moot.
        state.load_text = false;
        // The next snapshot must hold the new index.
        state.unsnapshotted += 1;
        self.cache.invalidate();
        for listener in self.listeners.read().expect("listeners lock").iter() {
            listener.rebuilt();
        }
        *self.position.lock().expect("position lock") = position_digest(&state);
        Ok(())
    }

    /// How far this replica's index is behind the outbox.
    pub async fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        let (watermark, last_apply, last_error) = {
            let sync = self.sync.lock().expect("sync lock");
            (sync.watermark, sync.last_apply, sync.last_error.clone())
        };
        let (head, oldest_pending) = self.db.outbox_lag(watermark).await?;
        let lag = oldest_pending
            .map(|written| Duration::from_micros(u64::try_from(Timestamp::now().0 - written).unwrap_or(0)))
            .unwrap_or_default();
        Ok(SyncStatus {
            head,
            watermark,
            lag,
            vector_count: self.vectors.read().expect("index lock").len(),
            last_apply,
            last_error,
            ready: self.is_ready(),
        })
    }
}
