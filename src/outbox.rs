//! Tailing the catalog outbox: the one cursor that every consumer of it keeps (the search
//! follower, the Milvus sync worker). A consumer reads the events past its watermark, applies
//! the ones it has not applied yet, and reports them here; the cursor decides how far the
//! watermark may move.
//!
//! Outbox ids are allocated when a transaction inserts, not when it commits, so a lower id can
//! become visible after a higher one. The cursor therefore remembers the ids applied above the
//! watermark and moves the watermark only over contiguous ones, or over a hole that has stayed
//! open past [`GAP_TIMEOUT`] (a transaction that rolled back after taking its id).

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use crate::store::catalog::OutboxEvent;

/// How long a hole in the ids is waited for before it is taken to be a rolled-back transaction.
pub const GAP_TIMEOUT: Duration = Duration::from_secs(10);

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
