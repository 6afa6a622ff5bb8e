//! Whole-database export and import for backups, in a form any backend can read back.
//!
//! Every table is read through the same diesel row types on every backend, so a row dumped from
//! PostgreSQL inserts unchanged into SQLite or MySQL. The dump runs in one snapshot transaction
//! and pages through each table by primary key, handing rows to a channel, so memory stays flat
//! however large the catalog is and writers are never blocked. What the rows are written to (the
//! archive format) is not this module's business.

use diesel::{migration::MigrationSource, prelude::*, sql_types::Text};
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{
    Db, SQLITE_MIGRATIONS, StoreError,
    schema::{api_keys, audit_events, categories, outbox, products, refresh_tokens, sellers, sessions, users},
};

/// Rows read per query while dumping: large enough to amortise round trips, small enough that a
/// page of products with embeddings stays a few MiB.
const DUMP_PAGE: i64 = 500;

/// Every backed-up table, in an order that satisfies foreign keys on insert (reverse it to delete).
pub const TABLES: &[&str] =
    &["categories", "users", "sellers", "products", "outbox", "sessions", "refresh_tokens", "api_keys", "audit_events"];

/// Tables deliberately left out of backups: coordination state that is only meaningful to the
/// processes running when it was written.
pub const NOT_BACKED_UP: &[&str] = &["leases", "session_events", "cluster_settings", "outbox_consumers"];

/// Binary columns travel as base64 text in the portable encoding.
mod base64_opt {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| STANDARD.decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Declares one row type per table with everything a dump and a restore need. Nullable columns
/// default to NULL when a backup from an older schema lacks them.
macro_rules! row_types {
    ($( $row:ident => $table:ident { $( $(#[$attr:meta])* $field:ident : $ty:ty ),* $(,)? } )*) => {$(
        #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, Serialize, Deserialize)]
        #[diesel(table_name = $table, treat_none_as_default_value = false)]
        #[serde(deny_unknown_fields)]
        pub struct $row { $( $(#[$attr])* pub $field: $ty ),* }
    )*};
}

row_types! {
    CategoryRow => categories { id: String, display_name: String, created_at: i64 }
    UserRow => users {
        id: String, email: String, password_hash: String, role: String, created_at: i64, updated_at: i64,
    }
    SellerRow => sellers {
        id: String, display_name: String, created_at: i64, #[serde(default)] owner_user_id: Option<String>,
    }
    ProductRow => products {
        id: String, seller_id: String, category_id: String, name: String, description: String,
        price_minor: i64, currency: String, image_urls: String,
        #[serde(default, with = "base64_opt")] embedding: Option<Vec<u8>>,
        status: String, created_at: i64, updated_at: i64, #[serde(default)] deleted_at: Option<i64>,
    }
    OutboxRow => outbox {
        id: i64, product_id: String, op: String,
        #[serde(default, with = "base64_opt")] embedding: Option<Vec<u8>>,
        created_at: i64,
    }
    SessionRow => sessions { id: String, user_id: String, created_at: i64, #[serde(default)] revoked_at: Option<i64> }
    RefreshTokenRow => refresh_tokens {
        token_hash: String, session_id: String, created_at: i64, expires_at: i64,
        #[serde(default)] used_at: Option<i64>,
    }
    ApiKeyRow => api_keys {
        id: String, user_id: String, display_name: String, secret_prefix: String, secret_hash: String,
        created_at: i64, #[serde(default)] expires_at: Option<i64>, #[serde(default)] last_used_at: Option<i64>,
        #[serde(default)] revoked_at: Option<i64>,
    }
    AuditEventRow => audit_events {
        id: i64, event_time: i64, principal: String, action: String, resource: String, status_code: String,
        reason: String, client_ip: String, request_id: String, #[serde(default = "empty_details")] details: String,
    }
}

fn empty_details() -> String {
    "{}".to_owned()
}

/// What a dump hands to its writer, in order: for each table in [`TABLES`], `Table`, its rows as
/// JSON objects, then `End`.
#[derive(Debug)]
pub enum DumpItem {
    Table(&'static str),
    Row(String),
    End,
}

/// A batch of one table's rows (JSON objects) for [`Db::restore`], in [`TABLES`] order.
/// [`Db::restore`] reads `Ok(Some(batch))` items until `Ok(None)`, the end marker; an `Err`, or
/// the channel closing before the marker, rolls the whole restore back.
#[derive(Debug)]
pub struct RestoreBatch {
    pub table: String,
    pub rows: Vec<String>,
}

/// Whether a restore may overwrite existing data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMode {
    /// Refuse unless the database holds nothing but what migrations seed.
    IntoEmpty,
    /// Delete every backed-up table's rows first, in the same transaction.
    Replace,
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

fn sink_closed() -> StoreError {
    StoreError::Unexpected(anyhow::anyhow!("the backup writer stopped before the dump finished"))
}

fn bad_row(table: &str, e: serde_json::Error) -> StoreError {
    StoreError::Unexpected(anyhow::anyhow!("a {table} row does not match this version's schema: {e}"))
}

/// Pages through one table by primary key and sends its rows. A macro because the connection
/// type differs per backend.
macro_rules! dump_table {
    ($conn:expr, $out:expr, $table:ident, $row:ty, $key:ident) => {{
        $out.send(DumpItem::Table(stringify!($table))).await.map_err(|_| sink_closed())?;
        let mut after = None;
        loop {
            let mut query =
                $table::table.select(<$row>::as_select()).order($table::$key.asc()).limit(DUMP_PAGE).into_boxed();
            if let Some(last) = after.take() {
                query = query.filter($table::$key.gt(last));
            }
            let rows: Vec<$row> = query.load($conn).await?;
            let full_page = rows.len() as i64 == DUMP_PAGE;
            after = rows.last().map(|r| r.$key.clone());
            for row in &rows {
                let line = serde_json::to_string(row).map_err(|e| StoreError::Unexpected(e.into()))?;
                $out.send(DumpItem::Row(line)).await.map_err(|_| sink_closed())?;
            }
            if !full_page {
                break;
            }
        }
        $out.send(DumpItem::End).await.map_err(|_| sink_closed())?;
    }};
}

macro_rules! dump_all {
    ($conn:expr, $out:expr) => {{
        dump_table!($conn, $out, categories, CategoryRow, id);
        dump_table!($conn, $out, users, UserRow, id);
        dump_table!($conn, $out, sellers, SellerRow, id);
        dump_table!($conn, $out, products, ProductRow, id);
        dump_table!($conn, $out, outbox, OutboxRow, id);
        dump_table!($conn, $out, sessions, SessionRow, id);
        dump_table!($conn, $out, refresh_tokens, RefreshTokenRow, token_hash);
        dump_table!($conn, $out, api_keys, ApiKeyRow, id);
        dump_table!($conn, $out, audit_events, AuditEventRow, id);
        Ok::<(), StoreError>(())
    }};
}

macro_rules! insert_batch {
    // SQLite has no DEFAULT keyword in multi-row VALUES, so diesel inserts its rows one by one
    // (inside the restore's one transaction, that costs little).
    (row_by_row, $conn:expr, $batch:expr, $table:ident, $row:ty) => {{
        for line in &$batch.rows {
            let row = serde_json::from_str::<$row>(line).map_err(|e| bad_row(stringify!($table), e))?;
            diesel::insert_into($table::table).values(&row).execute($conn).await?;
        }
    }};
    (batched, $conn:expr, $batch:expr, $table:ident, $row:ty) => {{
        let rows = $batch
            .rows
            .iter()
            .map(|line| serde_json::from_str::<$row>(line))
            .collect::<Result<Vec<$row>, _>>()
            .map_err(|e| bad_row(stringify!($table), e))?;
        diesel::insert_into($table::table).values(&rows).execute($conn).await?;
    }};
}

/// Inserts one batch into its table.
macro_rules! insert_any {
    ($how:ident, $conn:expr, $batch:expr) => {{
        match $batch.table.as_str() {
            "categories" => insert_batch!($how, $conn, $batch, categories, CategoryRow),
            "users" => insert_batch!($how, $conn, $batch, users, UserRow),
            "sellers" => insert_batch!($how, $conn, $batch, sellers, SellerRow),
            "products" => insert_batch!($how, $conn, $batch, products, ProductRow),
            "outbox" => insert_batch!($how, $conn, $batch, outbox, OutboxRow),
            "sessions" => insert_batch!($how, $conn, $batch, sessions, SessionRow),
            "refresh_tokens" => insert_batch!($how, $conn, $batch, refresh_tokens, RefreshTokenRow),
            "api_keys" => insert_batch!($how, $conn, $batch, api_keys, ApiKeyRow),
            "audit_events" => insert_batch!($how, $conn, $batch, audit_events, AuditEventRow),
            other => {
                return Err(StoreError::Unexpected(anyhow::anyhow!("the backup holds an unknown table `{other}`")));
            }
        }
    }};
}

/// Counts the rows that make a database "not empty" for a restore: anything but the categories
/// the first migration seeds (their `created_at` is 0).
macro_rules! user_data_rows {
    ($conn:expr) => {{
        let mut total: i64 = categories::table.filter(categories::created_at.ne(0)).count().get_result($conn).await?;
        total += users::table.count().get_result::<i64>($conn).await?;
        total += sellers::table.count().get_result::<i64>($conn).await?;
        total += products::table.count().get_result::<i64>($conn).await?;
        total += outbox::table.count().get_result::<i64>($conn).await?;
        total += sessions::table.count().get_result::<i64>($conn).await?;
        total += refresh_tokens::table.count().get_result::<i64>($conn).await?;
        total += api_keys::table.count().get_result::<i64>($conn).await?;
        total += audit_events::table.count().get_result::<i64>($conn).await?;
        total
    }};
}

/// Deletes every backed-up table's rows, children first.
macro_rules! delete_all {
    ($conn:expr) => {{
        diesel::delete(audit_events::table).execute($conn).await?;
        diesel::delete(api_keys::table).execute($conn).await?;
        diesel::delete(refresh_tokens::table).execute($conn).await?;
        diesel::delete(sessions::table).execute($conn).await?;
        diesel::delete(outbox::table).execute($conn).await?;
        diesel::delete(products::table).execute($conn).await?;
        diesel::delete(sellers::table).execute($conn).await?;
        diesel::delete(users::table).execute($conn).await?;
        diesel::delete(categories::table).execute($conn).await?;
    }};
}

/// The restore body shared by every backend: refuse or clear, then insert batches as they come.
macro_rules! restore_body {
    ($how:ident, $conn:expr, $mode:expr, $batches:expr) => {{
        if $mode == RestoreMode::IntoEmpty {
            let rows = user_data_rows!($conn);
            if rows > 0 {
                return Err(StoreError::NotEmpty(rows));
            }
        }
        // The seeded categories are in the backup too (with whatever edits they had).
        delete_all!($conn);
        let mut inserted: u64 = 0;
        loop {
            match $batches.recv().await {
                Some(Ok(Some(batch))) => {
                    inserted += batch.rows.len() as u64;
                    insert_any!($how, $conn, batch);
                }
                Some(Ok(None)) => break,
                Some(Err(e)) => return Err(StoreError::Unexpected(anyhow::anyhow!("reading the backup failed: {e}"))),
                // Only the end marker commits: a reader that died half-way must not.
                None => return Err(StoreError::Unexpected(anyhow::anyhow!("the backup reader stopped early"))),
            }
        }
        Ok::<u64, StoreError>(inserted)
    }};
}

impl Db {
    /// The newest migration applied to this database, e.g. `20261122000003`.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn schema_version(&self) -> Result<String, StoreError> {
        let rows: Vec<NameRow> = super::with_conn!(self, |conn| {
            diesel::sql_query("SELECT version AS name FROM __diesel_schema_migrations ORDER BY version DESC LIMIT 1")
                .load(conn)
                .await?
        });
        Ok(rows.into_iter().next().map(|r| r.name).unwrap_or_default())
    }

    /// Every table in the database (migration bookkeeping aside), for checking that backups cover
    /// them all.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn table_names(&self) -> Result<Vec<String>, StoreError> {
        let sql = match self {
            Self::Sqlite { .. } => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            Self::Postgres(_) => "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()",
            Self::Mysql(_) => {
                "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables WHERE table_schema = DATABASE()"
            }
        };
        let rows: Vec<NameRow> = super::with_conn!(self, |conn| diesel::sql_query(sql).load(conn).await?);
        let mut names: Vec<String> =
            rows.into_iter().map(|r| r.name).filter(|n| n != "__diesel_schema_migrations").collect();
        names.sort();
        Ok(names)
    }

    /// Sends every backed-up table's rows to `out` from one consistent snapshot: a repeatable-read
    /// read-only transaction on PostgreSQL, a consistent-snapshot transaction on MySQL, and one
    /// read transaction on SQLite (WAL lets writers go on meanwhile).
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn dump(&self, out: mpsc::Sender<DumpItem>) -> Result<(), StoreError> {
        match self {
            Self::Sqlite { pool, .. } => {
                let mut conn = pool.get().await?;
                conn.transaction::<_, StoreError, _>(async |conn| dump_all!(conn, out)).await
            }
            Self::Postgres(pool) => {
                let mut conn = pool.get().await?;
                conn.build_transaction()
                    .read_only()
                    .repeatable_read()
                    .run::<_, StoreError, _>(async |conn| dump_all!(conn, out))
                    .await
            }
            Self::Mysql(pool) => {
                let mut conn = pool.get().await?;
                // Applies to the next transaction only; InnoDB then reads every table from the
                // snapshot its first read takes.
                conn.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
                conn.transaction::<_, StoreError, _>(async |conn| dump_all!(conn, out)).await
            }
        }
    }

    /// Writes the batches into this database in one transaction, so a failed restore leaves the
    /// database as it was. Returns the number of rows inserted.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn restore(
        &self,
        mode: RestoreMode,
        mut batches: mpsc::Receiver<Result<Option<RestoreBatch>, String>>,
    ) -> Result<u64, StoreError> {
        let inserted = match self {
            Self::Sqlite { pool, write_lock } => {
                let _writer = write_lock.lock().await;
                let mut conn = pool.get().await?;
                conn.immediate_transaction::<_, StoreError, _>(async |conn| {
                    restore_body!(row_by_row, conn, mode, batches)
                })
                .await?
            }
            Self::Postgres(pool) => {
                let mut conn = pool.get().await?;
                conn.transaction::<_, StoreError, _>(async |conn| {
                    let inserted = restore_body!(batched, conn, mode, batches)?;
                    // Explicit ids do not move the sequences; the next insert must not collide.
                    conn.batch_execute(
                        "SELECT setval(pg_get_serial_sequence('outbox', 'id'), COALESCE((SELECT MAX(id) FROM outbox), 0) + 1, false);
                         SELECT setval(pg_get_serial_sequence('audit_events', 'id'), COALESCE((SELECT MAX(id) FROM audit_events), 0) + 1, false);",
                    )
                    .await?;
                    Ok(inserted)
                })
                .await?
            }
            Self::Mysql(pool) => {
                let mut conn = pool.get().await?;
                conn.transaction::<_, StoreError, _>(async |conn| restore_body!(batched, conn, mode, batches)).await?
            }
        };
        Ok(inserted)
    }
}

/// The newest migration this build knows, comparable with [`Db::schema_version`]. Every backend
/// has the same migration names, so SQLite's list stands for all.
pub fn latest_schema_version() -> String {
    MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS)
        .ok()
        .and_then(|list| list.iter().map(|m| m.name().version().to_string()).max())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_columns_round_trip_as_base64() {
        let row = OutboxRow {
            id: 7,
            product_id: "p".into(),
            op: "upsert".into(),
            embedding: Some(vec![0, 1, 254, 255]),
            created_at: 1,
        };
        let text = serde_json::to_string(&row).unwrap();
        assert!(text.contains("\"AAH+/w==\""), "{text}");
        assert_eq!(serde_json::from_str::<OutboxRow>(&text).unwrap(), row);
    }

    #[test]
    fn rows_from_an_older_schema_default_their_nullable_columns() {
        let row: SellerRow = serde_json::from_str(r#"{"id":"s","display_name":"S","created_at":3}"#).unwrap();
        assert_eq!(row.owner_user_id, None);
        let event: AuditEventRow = serde_json::from_str(
            r#"{"id":1,"event_time":2,"principal":"p","action":"a","resource":"r","status_code":"OK","reason":"","client_ip":"","request_id":""}"#,
        )
        .unwrap();
        assert_eq!(event.details, "{}");
    }

    #[test]
    fn unknown_columns_are_refused() {
        let err = serde_json::from_str::<CategoryRow>(r#"{"id":"c","display_name":"C","created_at":0,"x":1}"#);
        assert!(err.is_err());
    }

    #[test]
    fn latest_schema_version_is_a_migration_timestamp() {
        let v = latest_schema_version();
        assert_eq!(v.len(), 14, "{v}");
        assert!(v.chars().all(|c| c.is_ascii_digit()), "{v}");
    }
}
