//! Cluster settings: named values that every replica reads (the read-only switch, the last
//! reindex request). The table is a handful of rows, read whole on every poll.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{Db, StoreError, schema::cluster_settings, with_conn};

/// One setting as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = cluster_settings)]
pub struct SettingRow {
    pub name: String,
    pub value: String,
    pub reason: String,
    pub updated_at: i64,
    pub updated_by: String,
}

impl Db {
    /// Every setting.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn settings(&self) -> Result<Vec<SettingRow>, StoreError> {
        let rows = with_conn!(self, |conn| cluster_settings::table.select(SettingRow::as_select()).load(conn).await?);
        Ok(rows)
    }

    /// Writes a setting, replacing any earlier value.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn put_setting(&self, row: &SettingRow) -> Result<(), StoreError> {
        let _writer = self.write_guard().await;
        // Update, else insert: portable across the three backends' upsert dialects. Two
        // replicas inserting at once: the loser's insert fails on the key, and its update then
        // wins, as if it had come second.
        with_conn!(self, |conn| {
            for _ in 0..2 {
                let updated = diesel::update(cluster_settings::table.find(&row.name))
                    .set((
                        cluster_settings::value.eq(&row.value),
                        cluster_settings::reason.eq(&row.reason),
                        cluster_settings::updated_at.eq(row.updated_at),
                        cluster_settings::updated_by.eq(&row.updated_by),
                    ))
                    .execute(conn)
                    .await?;
                if updated > 0 {
                    return Ok(());
                }
                match diesel::insert_into(cluster_settings::table).values(row).execute(conn).await {
                    Ok(_) => return Ok(()),
                    Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UniqueViolation,
                        _,
                    )) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(StoreError::Unexpected(anyhow::anyhow!("setting `{}` neither updated nor inserted", row.name)))
        })
    }
}
