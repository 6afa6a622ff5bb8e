//! Tailing the catalog outbox: the one cursor that every consumer of it keeps (the search
//! follower, the Milvus sync worker). A consumer reads the events past its watermark, applies
//! the ones it has not applied yet, and reports them here; the cursor decides how far the
//! watermark may move.
//!
//! Outbox ids are allocated when a transaction inserts, not when it commits, so a lower id can
//! become visible after a higher one. The cursor therefore remembers the ids applied above the
//! watermark and moves the watermark only over contiguous ones, or over a hole that has stayed
//! open past [`GAP_TIMEOUT`] (a transaction that rolled back after taking its id).
//!
//! The outbox is also compacted here ([`compact`]): events older than the retention window that
//! every consumer heard from within the window has passed are deleted, and the highest id that
//! may be gone is recorded ([`COMPACTED_THROUGH`]) before anything is. A consumer whose
//! watermark is below that point cannot replay what it missed, and rebuilds from the tables
//! instead: the search index from the products table, Milvus by reconciliation.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::{
    domain::product::Timestamp,
    store::{Db, StoreError, catalog::OutboxEvent, settings::SettingRow},
};

/// How long a hole in the ids is waited for before it is taken to be a rolled-back transaction.
pub const GAP_TIMEOUT: Duration = Duration::from_secs(10);

/// Tells this replica's outbox consumers that a write has committed, so that they read it now
/// instead of at their next poll. Writes through other replicas are found by polling.
#[derive(Debug, Default, Clone)]
pub struct OutboxSignal {
    consumers: Vec<Arc<Notify>>,
}

impl OutboxSignal {
    pub fn new(consumers: impl IntoIterator<Item = Arc<Notify>>) -> Self {
        Self { consumers: consumers.into_iter().collect() }
    }

    /// A permit each: a consumer that is busy reads again as soon as it is done.
    pub fn written(&self) {
        self.consumers.iter().for_each(|c| c.notify_one());
    }
}

#[derive(Debug, Default, Clone)]
pub struct OutboxCursor {
    /// Every event with an id up to here has been applied.
    watermark: i64,
    /// Applied events above the watermark, waiting for the holes below them to fill.
    applied_above: BTreeSet<i64>,
    gap_since: Option<Instant>,
}

impl OutboxCursor {
    /// A cursor that has applied everything up to `watermark`, and `applied_above` beyond it.
    pub fn at(watermark: i64, applied_above: impl IntoIterator<Item = i64>) -> Self {
        Self {
            watermark,
            applied_above: applied_above.into_iter().filter(|id| *id > watermark).collect(),
            gap_since: None,
        }
    }

    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    pub fn applied_above(&self) -> &BTreeSet<i64> {
        &self.applied_above
    }

    /// The events of a page read past the watermark that are not applied yet.
    pub fn fresh<'a>(&self, events: &'a [OutboxEvent]) -> Vec<&'a OutboxEvent> {
        events.iter().filter(|e| !self.applied_above.contains(&e.id)).collect()
    }

    /// Records events as applied and moves the watermark as far as it may go.
    pub fn applied(&mut self, ids: impl IntoIterator<Item = i64>) {
        let watermark = self.watermark;
        self.applied_above.extend(ids.into_iter().filter(|id| *id > watermark));
        self.advance();
    }

    /// Goes back to `watermark` (or stays, if it is behind it already) and forgets what was
    /// applied above it: those events will be read and applied again.
    pub fn rewind(&mut self, watermark: i64) {
        self.watermark = self.watermark.min(watermark);
        self.applied_above.clear();
        self.gap_since = None;
    }

    /// Goes forward to `watermark` (or stays, if it is past it already): the events up to there
    /// were compacted away and are covered by a rebuild from the tables.
    pub fn skip_to(&mut self, watermark: i64) {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.applied_above.retain(|id| *id > watermark);
            self.gap_since = None;
            self.advance();
        }
    }

    /// The position as bytes: the watermark, then the ids applied above it. Two consumers at
    /// the same watermark may hold different events, so both parts count.
    pub fn position_bytes(&self) -> Vec<u8> {
        std::iter::once(self.watermark).chain(self.applied_above.iter().copied()).flat_map(i64::to_le_bytes).collect()
    }

    fn advance(&mut self) {
        loop {
            while self.applied_above.remove(&(self.watermark + 1)) {
                self.watermark += 1;
            }
            let Some(&next) = self.applied_above.first() else {
                self.gap_since = None;
                return;
            };
            let since = *self.gap_since.get_or_insert_with(Instant::now);
            if since.elapsed() < GAP_TIMEOUT {
                return;
            }
            tracing::debug!(from = self.watermark + 1, to = next - 1, "skipping outbox ids that never committed");
            self.watermark = next - 1;
            self.gap_since = None;
        }
    }
}

/// The cluster setting holding the highest outbox id that compaction may have deleted.
pub const COMPACTED_THROUGH: &str = "outbox_compacted_through";
/// Taken for one compaction period by the replica that compacts in it.
const COMPACTION_LEASE: &str = "outbox-compaction";
/// Events deleted per statement.
const COMPACTION_BATCH: i64 = 10_000;

/// `SOKO_OUTBOX_RETENTION_SECS` and `SOKO_OUTBOX_COMPACT_INTERVAL_SECS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events younger than this are kept whatever the consumers say, and a consumer not heard
    /// from for this long no longer holds events back (a replica that is gone).
    pub keep: Duration,
    /// How often one replica compacts.
    pub every: Duration,
}

/// The highest outbox id that may have been compacted away; 0 when none. Ids below the oldest
/// stored event count too: a database restored from a backup holds the compacted outbox but
/// not the setting (cluster settings are not backed up). A hole at the very start (the first
/// transaction rolled back) reads as compaction as well, which costs one needless rebuild.
pub async fn compacted_through(db: &Db) -> Result<i64, StoreError> {
    let settings = db.settings().await?;
    let recorded = settings.iter().find(|s| s.name == COMPACTED_THROUGH).and_then(|s| s.value.parse().ok());
    let missing = db.outbox_oldest().await?.map(|oldest| oldest - 1);
    Ok(recorded.unwrap_or(0).max(missing.unwrap_or(0)))
}

/// One compaction pass; returns how many events went and the new compaction point.
pub async fn compact(db: &Db, keep: Duration, by: &str) -> Result<(usize, i64), StoreError> {
    let before = Timestamp::now().0.saturating_sub(i64::try_from(keep.as_micros()).unwrap_or(i64::MAX));
    let through = db.lowest_consumer_watermark(before).await?.unwrap_or(i64::MAX);
    let mut point = compacted_through(db).await?;
    let mut deleted = 0;
    while let Some(cut) = db.outbox_compaction_cut(through, before, COMPACTION_BATCH).await? {
        // Recorded first: a consumer that finds ids missing must be able to tell compaction
        // from a transaction still in flight.
        if cut > point {
            point = cut;
            db.put_setting(&SettingRow {
                name: COMPACTED_THROUGH.into(),
                value: cut.to_string(),
                reason: format!("outbox compaction (events written before {before} µs, through {through})"),
                updated_at: Timestamp::now().0,
                updated_by: by.into(),
            })
            .await?;
        }
        let gone = db.delete_outbox_through(cut).await?;
        deleted += gone;
        if gone == 0 {
            break;
        }
    }
    Ok((deleted, point))
}

/// Compacts every `retention.every` on one replica at a time until `stop` resolves. The lease
/// is held for the whole period, so other replicas skip it.
pub async fn run_compaction(db: Db, retention: Retention, stop: impl Future<Output = ()>) {
    let holder = crate::store::lease::new_holder();
    let mut ticks = crate::periodic::Ticks::new(retention.every.min(Duration::from_secs(60)), stop);
    while ticks.next().await {
        match db.take_lease(COMPACTION_LEASE, &holder, retention.every).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not check the outbox compaction schedule");
                continue;
            }
        }
        match compact(&db, retention.keep, &holder).await {
            Ok((deleted, through)) => {
                metrics::counter!("soko_outbox_compacted_total").increment(deleted as u64);
                if deleted > 0 {
                    tracing::info!(deleted, through, "outbox compacted");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox compaction failed; the next period retries");
                let _ = db.release_lease(COMPACTION_LEASE, &holder).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_waits_for_holes_then_skips_them() {
        let mut cursor = OutboxCursor::default();
        cursor.applied([1, 2, 4, 5]);
        assert_eq!(cursor.watermark(), 2, "3 may still commit");
        cursor.applied([3]);
        assert_eq!(cursor.watermark(), 5);
        cursor.applied([7]);
        assert_eq!(cursor.watermark(), 5);
        cursor.gap_since = Some(Instant::now() - GAP_TIMEOUT - Duration::from_secs(1));
        cursor.applied([]);
        assert_eq!(cursor.watermark(), 7, "a hole open past the timeout is skipped");
    }

    #[test]
    fn skipping_forward_keeps_what_was_applied_beyond() {
        let mut cursor = OutboxCursor::at(2, [5, 9]);
        cursor.skip_to(4);
        assert_eq!(cursor.watermark(), 5, "4 was compacted, 5 applied");
        assert_eq!(cursor.applied_above().iter().copied().collect::<Vec<_>>(), [9]);
        cursor.skip_to(1);
        assert_eq!(cursor.watermark(), 5, "never backwards");
    }

    #[test]
    fn ids_applied_above_a_hole_are_part_of_the_position() {
        let mut cursor = OutboxCursor::at(5, []);
        let before = cursor.position_bytes();
        cursor.applied([7]);
        assert_ne!(cursor.position_bytes(), before, "two consumers at watermark 5 may hold different events");
    }

    #[test]
    fn a_rewind_forgets_what_was_applied_above() {
        let mut cursor = OutboxCursor::at(10, [12]);
        cursor.rewind(4);
        assert_eq!((cursor.watermark(), cursor.applied_above().len()), (4, 0));
        cursor.rewind(9);
        assert_eq!(cursor.watermark(), 4, "a rewind never moves forward");
    }
}
