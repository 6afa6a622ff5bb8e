//! SQL storage through diesel-async: SQLite (embedded default), PostgreSQL and MySQL/MariaDB/TiDB.
//!
//! Queries are written once with diesel's DSL and expanded for each backend by [`with_conn!`], so
//! every backend runs the same statements. Nothing here knows about gRPC.

pub mod auth;
pub mod backup;
pub mod catalog;
pub mod consumers;
mod error;
pub mod lease;
pub mod probe;
mod schema;
pub mod settings;

use std::{sync::Arc, time::Duration};

use diesel::SqliteConnection;
use diesel_async::{
    AsyncConnection, AsyncMigrationHarness, AsyncMysqlConnection, AsyncPgConnection, RunQueryDsl,
    SimpleAsyncConnection,
    pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod},
    sync_connection_wrapper::SyncConnectionWrapper,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;

pub use error::StoreError;

use crate::configuration::DatabaseUrl;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

type Sqlite = SyncConnectionWrapper<SqliteConnection>;
type Pool<C> = bb8::Pool<AsyncDieselConnectionManager<C>>;

/// A connection pool for one of the supported backends.
#[derive(Clone)]
pub enum Db {
    /// SQLite allows one writer at a time; writers queue on `write_lock` in the process instead of
    /// failing with SQLITE_BUSY when two transactions race to upgrade their locks.
    Sqlite {
        pool: Pool<Sqlite>,
        write_lock: Arc<tokio::sync::Mutex<()>>,
    },
    Postgres(Pool<AsyncPgConnection>),
    Mysql(Pool<AsyncMysqlConnection>),
}

/// Pool settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_size: u32,
    /// How long a call waits for a free connection before answering UNAVAILABLE. bb8's default
    /// (30 s) would turn a dead database into 30 s hangs.
    pub checkout_timeout: Duration,
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend `$db` is. The body
/// is compiled once per backend, so it must only use backend-generic diesel DSL.
macro_rules! with_conn {
    ($db:expr, |$conn:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite { pool, .. } => {
                let mut pooled = pool.get().await?;
                let $conn = &mut *pooled;
                $body
            }
            $crate::store::Db::Postgres(pool) => {
                let mut pooled = pool.get().await?;
                let $conn = &mut *pooled;
                $body
            }
            $crate::store::Db::Mysql(pool) => {
                let mut pooled = pool.get().await?;
                let $conn = &mut *pooled;
                $body
            }
        }
    };
}
pub(crate) use with_conn;

/// Runs `$body` in a transaction on a pooled connection of whichever backend `$db` is, with
/// `$err` as the transaction's error type. SQLite transactions begin IMMEDIATE: a deferred one
/// that reads first and then writes fails at once with SQLITE_BUSY when another connection holds
/// the write lock, instead of waiting for it.
macro_rules! with_transaction {
    ($db:expr, $err:ty, |$conn:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite { pool, .. } => {
                let mut pooled = pool.get().await?;
                pooled.immediate_transaction::<_, $err, _>(async |$conn| $body).await
            }
            $crate::store::Db::Postgres(pool) => {
                let mut pooled = pool.get().await?;
                pooled.transaction::<_, $err, _>(async |$conn| $body).await
            }
            $crate::store::Db::Mysql(pool) => {
                let mut pooled = pool.get().await?;
                pooled.transaction::<_, $err, _>(async |$conn| $body).await
            }
        }
    };
}
pub(crate) use with_transaction;

impl Db {
    /// Builds the pool without connecting: the first call (or [`Db::migrate`]) connects.
    pub fn connect(url: &DatabaseUrl, settings: &PoolSettings) -> Result<Self, StoreError> {
        Ok(match url {
            DatabaseUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StoreError::Unexpected(anyhow::anyhow!("cannot create {}: {e}", dir.display())))?;
                }
                let mut config = ManagerConfig::<Sqlite>::default();
                config.custom_setup = Box::new(|url| setup_sqlite(url.to_owned()).boxed());
                config.recycling_method = RecyclingMethod::Fast;
                let manager = AsyncDieselConnectionManager::new_with_config(path.to_string_lossy(), config);
                Self::Sqlite { pool: build_pool(manager, settings), write_lock: Arc::default() }
            }
            DatabaseUrl::Postgres(url) => {
                // tokio-postgres notices a closed socket by itself, so checking `is_broken` on
                // checkout drops dead connections without a round trip per call.
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                config.recycling_method = RecyclingMethod::CustomFunction(Box::new(|conn| {
                    let broken = conn.is_broken();
                    async move { if broken { Err(diesel::result::Error::BrokenTransactionManager) } else { Ok(()) } }
                        .boxed()
                }));
                Self::Postgres(build_pool(AsyncDieselConnectionManager::new_with_config(url, config), settings))
            }
            DatabaseUrl::Mysql(url) => {
                // mysql_async does not flag a dead connection as broken; verify on checkout so a
                // restarted server doesn't leave the pool full of dead connections.
                let mut config = ManagerConfig::default();
                config.recycling_method = RecyclingMethod::Verified;
                Self::Mysql(build_pool(AsyncDieselConnectionManager::new_with_config(url, config), settings))
            }
        })
    }

    /// The pool's connections and its checkout statistics since start.
    pub fn pool_state(&self) -> bb8::State {
        match self {
            Self::Sqlite { pool, .. } => pool.state(),
            Self::Postgres(pool) => pool.state(),
            Self::Mysql(pool) => pool.state(),
        }
    }

    /// The backend's name for logs and health.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres(_) => "postgres",
            Self::Mysql(_) => "mysql",
        }
    }

    /// Applies pending migrations; returns how many ran.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        fn run<C>(conn: C, migrations: EmbeddedMigrations) -> Result<usize, StoreError>
        where
            C: AsyncConnection,
            AsyncMigrationHarness<C>: MigrationHarness<<C as diesel_async::AsyncConnectionCore>::Backend>,
        {
            let mut harness = AsyncMigrationHarness::new(conn);
            let applied = harness
                .run_pending_migrations(migrations)
                .map_err(|e| StoreError::Unexpected(anyhow::anyhow!("migration failed: {e}")))?;
            Ok(applied.len())
        }
        match self {
            Self::Sqlite { pool, .. } => run(pool.dedicated_connection().await?, SQLITE_MIGRATIONS),
            Self::Postgres(pool) => run(pool.dedicated_connection().await?, POSTGRES_MIGRATIONS),
            Self::Mysql(pool) => run(pool.dedicated_connection().await?, MYSQL_MIGRATIONS),
        }
    }

    /// One round trip to the database, for readiness checks.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::sql_query("SELECT 1").execute(conn).await?;
            Ok(())
        })
    }

    /// Serialises writers on SQLite (see [`Db::Sqlite`]); a no-op elsewhere.
    pub(crate) async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self {
            Self::Sqlite { write_lock, .. } => Some(write_lock.lock().await),
            _ => None,
        }
    }
}

fn build_pool<C>(manager: AsyncDieselConnectionManager<C>, settings: &PoolSettings) -> Pool<C>
where
    C: diesel_async::pooled_connection::PoolableConnection + 'static,
    for<'a> diesel::dsl::select<diesel::dsl::AsExprOf<i32, diesel::sql_types::Integer>>:
        diesel_async::methods::LoadQuery<'a, C, i32>,
    diesel::query_builder::SqlQuery: diesel::query_builder::QueryFragment<C::Backend>,
{
    bb8::Pool::builder()
        .max_size(settings.max_size)
        .connection_timeout(settings.checkout_timeout)
        .test_on_check_out(true)
        .build_unchecked(manager)
}

/// Opens a SQLite file in WAL mode with full durability: a crash after commit never loses a write.
///
/// The busy timeout comes first: `journal_mode` needs a lock too, and without a timeout it fails
/// at once with "database is locked" while another connection holds one, e.g. while the last
/// connection of a server that just stopped checkpoints the WAL on close (seen in CI when a
/// test restarted a server on the same file).
async fn setup_sqlite(path: String) -> diesel::ConnectionResult<Sqlite> {
    let mut conn = Sqlite::establish(&path).await?;
    conn.batch_execute(
        "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )
    .await
    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}
