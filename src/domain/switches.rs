//! Switches an operator flips once for every replica: read-only mode, and a request to rebuild
//! the search index. They live in the database (`cluster_settings`), so they survive restarts;
//! each replica reads them at start and polls them, so a change reaches every replica within one
//! poll interval, and the replica that made it acts at once.

use std::{
    future::Future,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::sync::watch;

use super::{Error, audit::check_reason, auth::RequestContext, product::Timestamp};
use crate::{
    breaker::CircuitBreaker,
    periodic::Ticks,
    store::{Db, StoreError, settings::SettingRow},
};

/// How often replicas read the switches: the bound on how long a change takes to apply
/// everywhere.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

const READ_ONLY: &str = "read_only";
const REINDEX: &str = "reindex";

/// The read-only switch as last set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOnly {
    pub enabled: bool,
    pub reason: String,
    /// Unset if the switch was never changed.
    pub updated_at: Option<Timestamp>,
    /// Who changed it last, as the audit log names principals.
    pub updated_by: String,
}

impl ReadOnly {
    fn from_row(row: &SettingRow) -> Self {
        Self {
            enabled: row.value == "on",
            reason: row.reason.clone(),
            updated_at: Some(Timestamp(row.updated_at)),
            updated_by: row.updated_by.clone(),
        }
    }
}

#[derive(Default)]
struct Known {
    read_only: ReadOnly,
    /// The id of the last reindex request this replica has seen, so each is acted on once.
    reindex: Option<String>,
}

impl Known {
    /// Every change of the switch goes through here, so its gauge never disagrees with it.
    fn set_read_only(&mut self, state: ReadOnly) {
        metrics::gauge!("soko_read_only_mode").set(if state.enabled { 1.0 } else { 0.0 });
        self.read_only = state;
    }
}

/// Why writes are refused right now, if they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnlyCause {
    /// An operator turned the switch on.
    Manual,
    /// The database is not answering (its circuit breaker is open); ends when it answers again.
    DatabaseUnavailable,
}

impl ReadOnlyCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::DatabaseUnavailable => "database_unavailable",
        }
    }
}

#[derive(Clone)]
pub struct Switches {
    db: Db,
    /// Fed by the database prober: open means automatic read-only mode.
    database: Arc<CircuitBreaker>,
    known: Arc<RwLock<Known>>,
    /// Announces a reindex request made on another replica; the search room acts on it.
    reindex_requests: watch::Sender<u64>,
}

impl Switches {
    pub fn new(db: Db, database: Arc<CircuitBreaker>) -> Self {
        Self { db, database, known: Arc::default(), reindex_requests: watch::Sender::new(0) }
    }

    /// Reads the switches; call before serving so a restart comes up in the state it left.
    /// A reindex requested before this replica started is not repeated: it started with a
    /// fresh index.
    pub async fn load(&self) -> Result<(), StoreError> {
        let rows = self.db.settings().await?;
        let mut known = self.known.write().expect("switches lock");
        known.set_read_only(rows.iter().find(|r| r.name == READ_ONLY).map(ReadOnly::from_row).unwrap_or_default());
        known.reindex = rows.iter().find(|r| r.name == REINDEX).map(|r| r.value.clone());
        Ok(())
    }

    /// The read-only switch as this replica knows it.
    pub fn read_only(&self) -> ReadOnly {
        self.known.read().expect("switches lock").read_only.clone()
    }

    /// Why writes are refused right now: the manual switch first, then the database's state.
    pub fn read_only_cause(&self) -> Option<ReadOnlyCause> {
        if self.known.read().expect("switches lock").read_only.enabled {
            Some(ReadOnlyCause::Manual)
        } else if self.database.degraded() {
            Some(ReadOnlyCause::DatabaseUnavailable)
        } else {
            None
        }
    }

    /// Refuses a write while read-only mode is in effect, manual or automatic.
    pub fn check_writable(&self) -> Result<(), Error> {
        match self.read_only_cause() {
            Some(cause) => Err(Error::ReadOnly(cause)),
            None => Ok(()),
        }
    }

    /// Turns read-only mode on or off for every replica; this one applies it at once.
    pub async fn set_read_only(&self, ctx: &RequestContext, enabled: bool, reason: &str) -> Result<ReadOnly, Error> {
        check_reason(reason)?;
        let row = SettingRow {
            name: READ_ONLY.into(),
            value: if enabled { "on" } else { "off" }.into(),
            reason: reason.into(),
            updated_at: Timestamp::now().0,
            updated_by: ctx.principal.audit_name(),
        };
        self.db.put_setting(&row).await?;
        let state = ReadOnly::from_row(&row);
        self.known.write().expect("switches lock").set_read_only(state.clone());
        tracing::warn!(enabled, reason, by = %row.updated_by, "read-only mode switched");
        Ok(state)
    }

    /// Records a reindex request for the other replicas; the caller starts its own.
    pub async fn request_reindex(&self, ctx: &RequestContext, reason: &str) -> Result<(), Error> {
        check_reason(reason)?;
        let id = uuid::Uuid::now_v7().to_string();
        let row = SettingRow {
            name: REINDEX.into(),
            value: id.clone(),
            reason: reason.into(),
            updated_at: Timestamp::now().0,
            updated_by: ctx.principal.audit_name(),
        };
        // Seen before it is written, so this replica's own poll never repeats it; put back if
        // the write fails, so an earlier request is not taken for a new one.
        let previous = self.known.write().expect("switches lock").reindex.replace(id);
        if let Err(e) = self.db.put_setting(&row).await {
            self.known.write().expect("switches lock").reindex = previous;
            return Err(e.into());
        }
        Ok(())
    }

    /// Counts reindex requests made elsewhere; changes when another replica asks for one.
    pub fn reindex_requests(&self) -> watch::Receiver<u64> {
        self.reindex_requests.subscribe()
    }

    /// Polls the switches until `stop` resolves.
    pub async fn follow(self, stop: impl Future<Output = ()>) {
        let mut ticks = Ticks::new(POLL_INTERVAL, stop);
        while ticks.next().await {
            match self.db.settings().await {
                Ok(rows) => self.apply(&rows),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the cluster switches failed; keeping the last known state")
                }
            }
        }
    }

    fn apply(&self, rows: &[SettingRow]) {
        let mut known = self.known.write().expect("switches lock");
        if let Some(row) = rows.iter().find(|r| r.name == READ_ONLY) {
            let state = ReadOnly::from_row(row);
            if state.enabled != known.read_only.enabled {
                tracing::warn!(enabled = state.enabled, by = %state.updated_by, "read-only mode switched on another replica");
            }
            known.set_read_only(state);
        }
        if let Some(row) = rows.iter().find(|r| r.name == REINDEX)
            && known.reindex.as_deref() != Some(row.value.as_str())
        {
            known.reindex = Some(row.value.clone());
            tracing::info!(by = %row.updated_by, "reindex requested on another replica");
            self.reindex_requests.send_modify(|n| *n += 1);
        }
    }
}
