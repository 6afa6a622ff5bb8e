//! Leases: which replica may run a singleton job right now. A lease is a row that one holder owns
//! until it expires; taking it is one conditional write, so two replicas racing for it cannot
//! both win on any backend.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{Db, StoreError, schema::leases, with_conn};
use crate::domain::product::Timestamp;

/// A name for this process in the lease table, unique across replicas and restarts (a pid
/// alone repeats across containers).
pub fn new_holder() -> String {
    format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

impl Db {
    /// Takes the lease `name` for `holder` until `ttl` from now, if nobody (`holder` included)
    /// holds it unexpired. Returns whether it was taken. A job that should run once per period
    /// takes the lease for the period and keeps it, so other replicas skip that period.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = Timestamp::now().0;
        let expires_at = now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        let _writer = self.write_guard().await;
        // Two statements, no transaction: each is atomic by itself, and a failed insert must not
        // leave a PostgreSQL transaction aborted.
        with_conn!(self, |conn| {
            // Expired: take it over in one conditional update.
            let updated =
                diesel::update(leases::table.filter(leases::name.eq(name)).filter(leases::expires_at.le(now)))
                    .set((leases::holder.eq(holder), leases::expires_at.eq(expires_at)))
                    .execute(conn)
                    .await?;
            if updated > 0 {
                return Ok(true);
            }
            // Nobody has ever held it: the primary key makes only one concurrent insert win.
            match diesel::insert_into(leases::table)
                .values((leases::name.eq(name), leases::holder.eq(holder), leases::expires_at.eq(expires_at)))
                .execute(conn)
                .await
            {
                Ok(_) => Ok(true),
                Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => {
                    Ok(false)
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Extends the lease `name` to `ttl` from now if `holder` still has it (unexpired). Returns
    /// false when it lapsed or another holder took it: the caller must stop the job.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn renew_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = Timestamp::now().0;
        let expires_at = now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        let _writer = self.write_guard().await;
        let updated = with_conn!(self, |conn| {
            diesel::update(
                leases::table
                    .filter(leases::name.eq(name))
                    .filter(leases::holder.eq(holder))
                    .filter(leases::expires_at.gt(now)),
            )
            .set(leases::expires_at.eq(expires_at))
            .execute(conn)
            .await?
        });
        Ok(updated > 0)
    }

    /// Gives the lease up early if `holder` still has it, so another replica need not wait for
    /// it to expire.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let _writer = self.write_guard().await;
        with_conn!(self, |conn| {
            diesel::delete(leases::table.filter(leases::name.eq(name)).filter(leases::holder.eq(holder)))
                .execute(conn)
                .await?;
        });
        Ok(())
    }
}
