//! Durable outbox consumers' watermarks: where the Milvus sync (or the replica that takes its
//! lease over) continues from, and how far each replica's search snapshot has read. Compaction
//! keeps every event that a consumer heard from recently still needs.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{
    Db, StoreError,
    schema::{outbox, outbox_consumers},
    with_conn,
};
use crate::domain::product::Timestamp;

impl Db {
    /// The watermark `consumer` last stored; 0 (replay everything) when it never stored one.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn consumer_watermark(&self, consumer: &str) -> Result<i64, StoreError> {
        let found: Option<i64> = with_conn!(self, |conn| {
            outbox_consumers::table
                .filter(outbox_consumers::name.eq(consumer))
                .select(outbox_consumers::watermark)
                .first(conn)
                .await
                .optional()?
        });
        Ok(found.unwrap_or(0))
    }

    /// The lowest watermark of the consumers that stored one at or after `since` (micros), if
    /// any did: the oldest event one of them may still read.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn lowest_consumer_watermark(&self, since: i64) -> Result<Option<i64>, StoreError> {
        Ok(with_conn!(self, |conn| {
            outbox_consumers::table
                .filter(outbox_consumers::updated_at.ge(since))
                .select(diesel::dsl::min(outbox_consumers::watermark))
                .first::<Option<i64>>(conn)
                .await?
        }))
    }

    /// Where a compaction may cut: the highest id at or below `through`, and below every event
    /// written at or after `before` (micros) and below the newest event (which tells a new
    /// replica where the outbox stands), at most `limit` events past the oldest. `None` when
    /// nothing may go.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn outbox_compaction_cut(
        &self,
        through: i64,
        before: i64,
        limit: i64,
    ) -> Result<Option<i64>, StoreError> {
        Ok(with_conn!(self, |conn| {
            let head: Option<i64> = outbox::table.select(diesel::dsl::max(outbox::id)).first(conn).await?;
            // The oldest event too young to go: nothing from it on is deleted, so the ids that
            // may be missing are exactly those up to one cut.
            let young: Option<i64> = outbox::table
                .filter(outbox::created_at.ge(before))
                .select(diesel::dsl::min(outbox::id))
                .first(conn)
                .await?;
            let mut cut = through.min(head.unwrap_or(0) - 1);
            if let Some(young) = young {
                cut = cut.min(young - 1);
            }
            // Up to `limit` events from the oldest, so no statement holds the table for long.
            let batch_end: Option<i64> = outbox::table
                .filter(outbox::id.le(cut))
                .order(outbox::id.asc())
                .offset(limit - 1)
                .select(outbox::id)
                .first(conn)
                .await
                .optional()?;
            let oldest: Option<i64> = outbox::table.select(diesel::dsl::min(outbox::id)).first(conn).await?;
            oldest.filter(|oldest| *oldest <= cut).map(|_| batch_end.unwrap_or(cut))
        }))
    }

    /// Deletes the outbox events with ids up to `cut`; returns how many went.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn delete_outbox_through(&self, cut: i64) -> Result<usize, StoreError> {
        let _writer = self.write_guard().await;
        Ok(with_conn!(self, |conn| diesel::delete(outbox::table.filter(outbox::id.le(cut))).execute(conn).await?))
    }

    /// The oldest outbox id still stored, if any.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn outbox_oldest(&self) -> Result<Option<i64>, StoreError> {
        Ok(with_conn!(self, |conn| outbox::table.select(diesel::dsl::min(outbox::id)).first(conn).await?))
    }

    /// Stores `consumer`'s watermark. Each consumer has one writer (the lease holder, or the
    /// replica named in it), so an update, or an insert the first time, needs no upsert syntax
    /// (which differs by backend).
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn set_consumer_watermark(&self, consumer: &str, watermark: i64) -> Result<(), StoreError> {
        let now = Timestamp::now().0;
        let _writer = self.write_guard().await;
        with_conn!(self, |conn| {
            let updated = diesel::update(outbox_consumers::table.filter(outbox_consumers::name.eq(consumer)))
                .set((outbox_consumers::watermark.eq(watermark), outbox_consumers::updated_at.eq(now)))
                .execute(conn)
                .await?;
            if updated == 0 {
                diesel::insert_into(outbox_consumers::table)
                    .values((
                        outbox_consumers::name.eq(consumer),
                        outbox_consumers::watermark.eq(watermark),
                        outbox_consumers::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
            }
        });
        Ok(())
    }
}
