//! Product search. The index lives in this process and is fed only by the catalog outbox, in id
//! order, so every replica converges on the database. A write through this replica wakes the
//! follower at once; writes through other replicas are found by polling, every
//! [`POLL_INTERVAL`] while events keep coming and backing off to [`IDLE_POLL_MAX`] when none do,
//! so an idle server does next to nothing. The follower also tells the other followers of the
//! outbox (the product cache) what it applied: one tail of the outbox, read once.

mod by_image;
pub mod cache;
mod query;
mod rebuild;
pub mod text;

pub use by_image::ImageRequest;
pub use query::{DEFAULT_TOP_K, MAX_TOP_K, QUERY_MAX_CHARS, SearchRequest, SearchSort, VectorRequest};
use query::{RRF_DEPTH, RRF_K, parse_filter, parse_top_k};
pub use rebuild::{ReindexProgress, SyncStatus};

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use cache::SearchCache;
use text::TextIndex;

use crate::{
    domain::product::{ProductId, ProductStatus, Visibility},
    outbox::OutboxCursor,
    store::{Db, StoreError, catalog::Version},
    vector::{
        HnswParams, VectorIndex,
        snapshot::{self, SnapshotConfig},
    },
};

/// The vector engine keeps products under their ids.
impl crate::vector::Key for ProductId {
    fn to_bytes(self) -> [u8; 16] {
        self.0.into_bytes()
    }

    fn from_bytes(bytes: [u8; 16]) -> Self {
        ProductId(uuid::Uuid::from_bytes(bytes))
    }
}

/// How often the follower looks for new outbox events while it keeps finding some.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The longest the follower waits between looks when nothing is happening: how late a write
/// made through another replica can reach this one when the outbox has been quiet.
pub const IDLE_POLL_MAX: Duration = Duration::from_secs(1);
const BATCH: i64 = 500;
/// How often the follower's lag is measured for metrics.
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// New vectors gathered before they are added to the index, bounding a catch-up's memory.
const PENDING_MAX: usize = 50_000;

/// The search index and the state of its outbox follower.
pub struct SearchEngine {
    db: Db,
    cache: SearchCache,
    /// Digest of the outbox position the index has reached (the watermark and the ids applied
    /// above it), published after the index changes: part of every cache key.
    position: std::sync::Mutex<[u8; 32]>,
    /// Digest of the settings that shape results, so replicas configured differently never
    /// share cache entries.
    salt: [u8; 32],
    text: RwLock<TextIndex>,
    vectors: RwLock<VectorIndex<ProductId>>,
    follow: tokio::sync::Mutex<FollowState>,
    ready: std::sync::atomic::AtomicBool,
    snapshots: Option<SnapshotConfig>,
    /// What the sync status reports, kept apart from `follow` so reading it never waits for a
    /// catch-up.
    sync: std::sync::Mutex<rebuild::SyncInfo>,
    /// The running or last reindex on this replica.
    reindex: std::sync::Mutex<Option<ReindexProgress>>,
    /// Signalled by writes through this replica: the follower looks at once.
    wake: Arc<tokio::sync::Notify>,
    /// Told of the events each catch-up applied.
    listeners: RwLock<Vec<Arc<dyn OutboxListener>>>,
    /// Where vector queries go instead of the local index (`SOKO_VECTOR_BACKEND=milvus`).
    remote: std::sync::OnceLock<Arc<dyn RemoteVectors>>,
    /// This replica's name among the outbox consumers, when it keeps snapshots: compaction
    /// keeps what a restart from its snapshot would replay.
    consumer: Option<String>,
}

/// How often a replica with snapshots tells compaction where its snapshot stands.
const CONSUMER_REPORT_INTERVAL: Duration = Duration::from_secs(30);

/// A vector store outside this process that answers nearest-neighbour queries in place of the
/// local index: Milvus, for catalogs too big for one replica. It answers live, active products
/// matching the filter, re-checked against the database, best first.
pub trait RemoteVectors: Send + Sync {
    fn nearest<'a>(
        &'a self,
        query: &'a [f32],
        k: usize,
        filter: &'a crate::domain::listing::ProductFilter,
        exclude: Option<ProductId>,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<Vec<(crate::domain::product::Product, f32)>>>;
}

/// Something else kept in step with the outbox, told by the search follower what it applied.
pub trait OutboxListener: Send + Sync {
    fn applied(&self, events: &[(ProductId, Version)]);
    /// A reindex read the products table whole: whatever was changed behind the outbox's back
    /// (a repair by hand) is in the index now, and should be wherever else products are kept.
    fn rebuilt(&self);
}

impl OutboxListener for crate::product_cache::ProductCache {
    fn applied(&self, events: &[(ProductId, Version)]) {
        crate::product_cache::ProductCache::applied(self, events);
    }

    fn rebuilt(&self) {
        self.clear();
    }
}

#[derive(Default)]
struct FollowState {
    /// How far the index has applied the outbox.
    cursor: OutboxCursor,
    /// Set when the vector index came from a snapshot: the text index is then loaded from the
    /// products table before the outbox past the watermark is replayed.
    load_text: bool,
    /// Events applied since the last snapshot.
    unsnapshotted: usize,
    /// The watermark of the snapshot on disk: where a restart would replay from.
    snapshot_watermark: Option<i64>,
    /// Whether the outbox has been checked for compaction past the watermark since start.
    compaction_checked: bool,
}

impl SearchEngine {
    pub fn new(
        db: Db,
        dim: usize,
        params: HnswParams,
        snapshots: Option<SnapshotConfig>,
        cache: SearchCache,
    ) -> Arc<Self> {
        // The host and the snapshot directory: stable across restarts of this replica, distinct
        // for replicas sharing a host.
        let consumer = snapshots.as_ref().map(|config| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "localhost".into());
            let dir = cache::digest(config.dir.to_string_lossy().as_bytes());
            format!("search:{}:{:02x}{:02x}{:02x}{:02x}", host.trim(), dir[0], dir[1], dir[2], dir[3])
        });
        Arc::new(Self {
            db,
            cache,
            position: std::sync::Mutex::new(position_digest(&FollowState::default())),
            salt: cache::digest(format!("dim={dim}|{params:?}|rrf={RRF_K},{RRF_DEPTH}").as_bytes()),
            text: RwLock::new(TextIndex::default()),
            vectors: RwLock::new(VectorIndex::new(dim, params, 10_000)),
            follow: tokio::sync::Mutex::new(FollowState::default()),
            ready: std::sync::atomic::AtomicBool::new(false),
            snapshots,
            sync: std::sync::Mutex::default(),
            reindex: std::sync::Mutex::default(),
            wake: Arc::default(),
            listeners: RwLock::default(),
            remote: std::sync::OnceLock::new(),
            consumer,
        })
    }

    /// Sends vector queries to `remote` from now on (set once, at start-up).
    pub fn route_vectors_to(&self, remote: Arc<dyn RemoteVectors>) {
        let _ = self.remote.set(remote);
    }

    /// What a write through this replica signals so the follower picks its event up at once.
    pub fn wake_handle(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.wake)
    }

    /// Adds a listener told of every event applied from now on.
    pub fn listen(&self, listener: Arc<dyn OutboxListener>) {
        self.listeners.write().expect("listeners lock").push(listener);
    }

    /// Whether the initial catch-up with the outbox has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.text.read().expect("index lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies every outbox event available now. Events are applied by re-reading the product's
    /// current row, so applying one twice, or out of order, leaves the same index.
    ///
    /// During a backlog, new vectors are gathered over the whole catch-up and added at its end,
    /// so a start-up (or a bulk import) builds the graph in bulk on every core instead of one
    /// insert at a time.
    pub async fn catch_up(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut state = self.follow.lock().await;
        if state.load_text {
            self.load_text_index().await?;
            state.load_text = false;
        }
        let mut applied = 0;
        let mut pending: HashMap<ProductId, Vec<f32>> = HashMap::new();
        loop {
            let watermark = state.cursor.watermark();
            let events = self.db.outbox_after(watermark, BATCH).await?;
            // Ids missing right past the watermark: a transaction still in flight, or events
            // compacted away (looked at before the cursor gives up on them as rolled back).
            // At start the point is checked whatever the outbox holds.
            if applied == 0 && (!state.compaction_checked || events.first().is_some_and(|e| e.id > watermark + 1)) {
                state.compaction_checked = true;
                let through = crate::outbox::compacted_through(&self.db).await?;
                if through > watermark {
                    drop(state);
                    tracing::warn!(
                        watermark,
                        compacted_through = through,
                        "the outbox was compacted past this replica's position; rebuilding the search index from the products table"
                    );
                    self.rebuild_index(through).await?;
                    state = self.follow.lock().await;
                    continue;
                }
            }
            let fresh = state.cursor.fresh(&events);
            let mut ids: Vec<ProductId> = fresh.iter().filter_map(|e| e.product_id.parse().ok()).collect();
            ids.sort();
            ids.dedup();
            // A full batch means a backlog (start-up, a bulk import): its vectors are gathered
            // for a bulk build. Otherwise they go in now, with the text, so both agree.
            let backlog = !pending.is_empty() || events.len() as i64 >= BATCH;
            if !ids.is_empty() {
                let live = self.db.get_products(&ids, Visibility::Everything).await?;
                let mut index = self.text.write().expect("index lock");
                let mut vectors = self.vectors.write().expect("index lock");
                for id in &ids {
                    index.remove(*id);
                    vectors.remove(*id);
                    pending.remove(id);
                }
                for (product, _) in live.into_iter().filter(|(p, _)| p.status == ProductStatus::Active) {
                    match &product.embedding {
                        Some(embedding) if backlog => drop(pending.insert(product.id, embedding.clone())),
                        Some(embedding) => vectors.upsert(product.id, embedding),
                        None => {}
                    }
                    index.upsert(product);
                }
            }
            if !fresh.is_empty() {
                self.cache.invalidate();
                let events: Vec<(ProductId, Version)> =
                    fresh.iter().filter_map(|e| Some((e.product_id.parse().ok()?, Version(e.id)))).collect();
                for listener in self.listeners.read().expect("listeners lock").iter() {
                    listener.applied(&events);
                }
            }
            applied += fresh.len();
            state.unsnapshotted += fresh.len();
            state.cursor.applied(fresh.iter().map(|e| e.id));
            let done = (events.len() as i64) < BATCH || fresh.is_empty();
            if done || pending.len() >= PENDING_MAX {
                self.add_vectors(std::mem::take(&mut pending)).await;
                // Only after the index holds these events: a key naming this position is then
                // never computed from an index that lacks them.
                *self.position.lock().expect("position lock") = position_digest(&state);
            }
            if done {
                self.sync.lock().expect("sync lock").caught_up(state.cursor.watermark(), applied);
                return Ok(applied);
            }
        }
    }

    /// Adds vectors to the index: one insert at a time for a few, a bulk rebuild for many (or
    /// when deletes and updates have left more stale points than live ones). The
    /// rebuild reads the current index under the read lock, so searches go on meanwhile; only
    /// this follower writes, so nothing changes before the new index is swapped in.
    async fn add_vectors(self: &Arc<Self>, pending: HashMap<ProductId, Vec<f32>>) {
        if pending.is_empty() && !self.vectors.read().expect("index lock").should_rebuild(0) {
            return;
        }
        let engine = Arc::clone(self);
        let added = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let count = pending.len();
            let vectors = engine.vectors.read().expect("index lock");
            if vectors.should_rebuild(count) {
                let index = vectors.rebuilt_with(pending.into_iter().collect());
                drop(vectors);
                *engine.vectors.write().expect("index lock") = index;
                tracing::info!(
                    vectors = count,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "vector index rebuilt in bulk"
                );
            } else {
                drop(vectors);
                let mut vectors = engine.vectors.write().expect("index lock");
                for (id, embedding) in pending {
                    vectors.upsert(id, &embedding);
                }
            }
        })
        .await;
        if let Err(e) = added {
            // A panic in the index code is a bug; log it rather than take the follower down.
            tracing::error!(error = %e, "adding vectors to the search index failed");
        }
    }

    /// Every live product into the text index, a page at a time (after a snapshot restored the
    /// vectors; the outbox replay then brings both up to date).
    async fn load_text_index(&self) -> Result<(), StoreError> {
        let mut after = None;
        loop {
            let page = self.db.products_after(after, BATCH).await?;
            let Some(last) = page.last().map(|p| p.id) else { return Ok(()) };
            let mut text = self.text.write().expect("index lock");
            for product in page.into_iter().filter(|p| p.status == ProductStatus::Active) {
                text.upsert(product);
            }
            after = Some(last);
        }
    }

    /// Loads the snapshot, if there is a usable one; otherwise the index is rebuilt by replaying
    /// the whole outbox.
    async fn restore(self: &Arc<Self>) {
        let Some(config) = self.snapshots.clone() else { return };
        let (dim, params) = {
            let vectors = self.vectors.read().expect("index lock");
            (vectors.dim(), vectors.params())
        };
        let started = Instant::now();
        let loaded = tokio::task::spawn_blocking(move || snapshot::load(&config, dim, params)).await;
        match loaded {
            Ok(Ok(restored)) => {
                let points = restored.index.points();
                *self.vectors.write().expect("index lock") = restored.index;
                let mut state = self.follow.lock().await;
                state.cursor = OutboxCursor::at(restored.watermark, restored.applied_above);
                state.snapshot_watermark = Some(restored.watermark);
                state.load_text = true;
                tracing::info!(
                    points,
                    watermark = restored.watermark,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "search index loaded from its snapshot"
                );
            }
            Ok(Err(snapshot::LoadError::Missing)) => {
                tracing::info!("no search snapshot; building the index from the outbox")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "search snapshot not used; rebuilding the index from the outbox"),
            Err(e) => {
                tracing::warn!(error = %e, "loading the search snapshot failed; rebuilding the index from the outbox")
            }
        }
    }

    /// Writes a snapshot if anything changed since the last one. The follower is paused while
    /// it is written (searches are not), so the snapshot and its watermark agree.
    pub async fn snapshot(self: &Arc<Self>) {
        let Some(config) = self.snapshots.clone() else { return };
        let mut state = self.follow.lock().await;
        if state.load_text {
            return;
        }
        if state.unsnapshotted == 0 {
            // The snapshot on disk is still current: its age, as alerts read it, is zero.
            metrics::gauge!("soko_search_snapshot_timestamp_seconds").set(unix_seconds());
            return;
        }
        let (watermark, above): (i64, Vec<i64>) =
            (state.cursor.watermark(), state.cursor.applied_above().iter().copied().collect());
        let engine = Arc::clone(self);
        let started = Instant::now();
        let written = tokio::task::spawn_blocking(move || {
            let vectors = engine.vectors.read().expect("index lock");
            snapshot::write(&config, &vectors, watermark, &above)
        })
        .await;
        match written {
            Ok(Ok(dir)) => {
                state.unsnapshotted = 0;
                state.snapshot_watermark = Some(watermark);
                drop(state);
                metrics::gauge!("soko_search_snapshot_timestamp_seconds").set(unix_seconds());
                tracing::info!(dir = %dir.display(), watermark, elapsed_ms = started.elapsed().as_millis() as u64, "search snapshot written");
                self.report_position().await;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "writing the search snapshot failed; will retry"),
            Err(e) => tracing::warn!(error = %e, "writing the search snapshot failed; will retry"),
        }
    }

    /// Follows the outbox until `stop` resolves: loads the snapshot first, takes one on schedule
    /// and a last one on the way out. The first catch-up marks the engine ready.
    pub async fn follow(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        self.restore().await;
        let interval = self.snapshots.as_ref().map(|c| c.interval);
        let mut last_snapshot = Instant::now();
        let mut last_lag_report = Instant::now() - LAG_REPORT_INTERVAL;
        let mut last_consumer_report = Instant::now() - CONSUMER_REPORT_INTERVAL;
        let mut wait = POLL_INTERVAL;
        loop {
            match self.catch_up().await {
                Ok(applied) => {
                    wait = if applied > 0 { POLL_INTERVAL } else { (wait * 2).min(IDLE_POLL_MAX) };
                    if !self.ready.swap(true, std::sync::atomic::Ordering::AcqRel) {
                        tracing::info!(products = self.len(), "search index caught up with the outbox");
                    }
                    metrics::gauge!("soko_search_last_sync_timestamp_seconds").set(unix_seconds());
                    metrics::gauge!("soko_search_index_products").set(self.len() as f64);
                }
                Err(e) => {
                    wait = IDLE_POLL_MAX;
                    tracing::warn!(error = %e, "search index: reading the outbox failed; retrying");
                    self.sync.lock().expect("sync lock").failed(&e);
                }
            }
            if last_lag_report.elapsed() >= LAG_REPORT_INTERVAL {
                last_lag_report = Instant::now();
                // What an alert on follower lag reads: a query, so not on every poll.
                if let Ok(status) = self.sync_status().await {
                    metrics::gauge!("soko_search_lag_seconds").set(status.lag.as_secs_f64());
                    metrics::gauge!("soko_search_lag_events").set((status.head - status.watermark).max(0) as f64);
                }
            }
            if interval.is_some_and(|every| last_snapshot.elapsed() >= every) {
                self.snapshot().await;
                last_snapshot = Instant::now();
            }
            if last_consumer_report.elapsed() >= CONSUMER_REPORT_INTERVAL {
                last_consumer_report = Instant::now();
                self.report_position().await;
            }
            tokio::select! {
                () = &mut stop => {
                    self.snapshot().await;
                    return;
                }
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => wait = POLL_INTERVAL,
            }
        }
    }
}

impl SearchEngine {
    /// Stores where this replica's snapshot stands (or, before its first one, its index) among
    /// the outbox consumers, so compaction keeps what a restart would replay.
    async fn report_position(&self) {
        let Some(consumer) = &self.consumer else { return };
        let watermark = {
            let state = self.follow.lock().await;
            state.snapshot_watermark.unwrap_or_else(|| state.cursor.watermark())
        };
        if let Err(e) = self.db.set_consumer_watermark(consumer, watermark).await {
            tracing::debug!(error = %e, "reporting the search snapshot's position failed; compaction may go past it");
        }
    }
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

fn position_digest(state: &FollowState) -> [u8; 32] {
    cache::digest(&state.cursor.position_bytes())
}
