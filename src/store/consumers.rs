//! Durable outbox consumers' watermarks (the Milvus sync): where a restarted worker, or the
//! replica that takes its lease over, continues from.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{Db, StoreError, schema::outbox_consumers, with_conn};
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

    /// Stores `consumer`'s watermark. Only the lease holder writes it, so an update, or an insert
    /// the first time, needs no upsert syntax (which differs by backend).
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
