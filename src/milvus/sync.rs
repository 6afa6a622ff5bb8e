//! The Milvus sync worker: tails the outbox past the watermark stored in `outbox_consumers` and
//! makes Milvus match the products table for every product an event names.
//!
//! - **One at a time.** Only the replica holding the `milvus-sync` lease syncs; it renews the
//!   lease as it goes, and another replica takes over within [`LEASE_TTL`] of its death.
//! - **Idempotent.** An event is applied by re-reading its product: a live product with an
//!   embedding is upserted, anything else deleted. Replaying a batch, or the whole outbox,
//!   leaves Milvus as it was. So a lapsed holder that writes once more after a takeover does no
//!   harm, and the watermark may be stored late.
//! - **At least once.** The watermark moves only after Milvus acknowledged the batch, and over
//!   outbox id holes the way the search follower's does ([`OutboxCursor`]).
//! - **Patient.** Failures back off exponentially with jitter up to [`BACKOFF_MAX`]; the outbox
//!   holds the backlog meanwhile, and the breaker tells health that Milvus is degraded.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{Milvus, MilvusError, Row};
use crate::{
    breaker::CircuitBreaker,
    domain::product::{ProductId, Visibility},
    outbox::OutboxCursor,
    store::{Db, StoreError},
};

/// The worker's name in `outbox_consumers`.
pub const CONSUMER: &str = "milvus";
pub(super) const LEASE: &str = "milvus-sync";
/// How long a holder's lease lasts without renewal: the longest a dead holder's work waits.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// Events read and applied per Milvus round trip.
const BATCH: i64 = 500;
/// How often an idle holder looks for new events, and a non-holder for a free lease.
const POLL: Duration = Duration::from_millis(200);
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Milvus(#[from] MilvusError),
}

/// What `GetSyncStatus` and `/health/ready` report of the sync. Every replica measures the
/// shared watermark's lag, so any of them can tell whether Milvus is keeping up, whichever one
/// syncs.
#[derive(Debug, Clone, Default)]
pub struct MilvusSyncStatus {
    /// Whether this replica holds the lease (is the one syncing).
    pub syncing_here: bool,
    /// The shared watermark, as last read or moved here.
    pub watermark: i64,
    /// The outbox head when the lag was last measured.
    pub head: i64,
    /// Events past the watermark, and the age of the oldest of them.
    pub lag_events: i64,
    pub lag: Duration,
    /// Events applied by this replica since it started.
    pub applied: u64,
    pub last_apply: Option<crate::domain::product::Timestamp>,
    /// The last failure of this replica's sync; cleared by a success.
    pub last_error: Option<String>,
    /// The breaker in front of Milvus on this replica (`closed`, `open`, `half_open`).
    pub circuit: &'static str,
    /// When this replica last reconciled Milvus with the database, and what it found.
    pub last_reconcile: Option<(crate::domain::product::Timestamp, super::ReconcileReport)>,
}

/// Past this lag a replica that does not sync itself reports Milvus as degraded: nobody is
/// keeping it up to date.
pub const DEGRADED_LAG: Duration = Duration::from_secs(30);

impl MilvusSyncStatus {
    /// Whether Milvus is behind or failing, as health reports it (search stays SERVING: vector
    /// search falls back to the local index).
    pub fn degraded(&self) -> bool {
        self.last_error.is_some() || self.circuit != "closed" || self.lag > DEGRADED_LAG
    }
}

pub struct MilvusSync {
    db: Db,
    milvus: Milvus,
    /// Who this replica is in the lease table.
    holder: String,
    breaker: Arc<CircuitBreaker>,
    status: Mutex<MilvusSyncStatus>,
    /// The holder's reconciliation schedule: when the last one ran, and when requests were last
    /// looked for.
    reconciled_at: Mutex<Option<Instant>>,
    requests_checked_at: Mutex<Option<Instant>>,
    /// Rung by this replica's catalog writes: the holder applies them at once instead of at its
    /// next poll (up to 200 ms later). With Milvus's default time tick the end-to-end lag did not
    /// move (BENCHMARKS.md), but Soko's own share of it is gone.
    wake: Arc<tokio::sync::Notify>,
}

impl MilvusSync {
    pub fn new(db: Db, milvus: Milvus, breaker: Arc<CircuitBreaker>) -> Arc<Self> {
        // Present from the start, so that rates and alerts see zero rather than no series.
        for counter in
            ["soko_milvus_sync_events_total", "soko_milvus_sync_errors_total", "soko_milvus_reconcile_repairs_total"]
        {
            metrics::counter!(counter).absolute(0);
        }
        Arc::new(Self {
            db,
            milvus,
            holder: crate::store::lease::new_holder(),
            breaker,
            status: Mutex::default(),
            reconciled_at: Mutex::default(),
            requests_checked_at: Mutex::default(),
            wake: Arc::default(),
        })
    }

    pub fn wake_handle(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.wake)
    }

    pub fn status(&self) -> MilvusSyncStatus {
        let mut status = self.status.lock().expect("status lock").clone();
        status.circuit = self.breaker.state().as_str();
        status
    }

    pub fn milvus(&self) -> &Milvus {
        &self.milvus
    }

    /// Syncs until `stop` resolves (finishing the batch in hand), then gives the lease up so
    /// another replica need not wait for it to expire.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut cursor: Option<OutboxCursor> = None;
        let mut renewed = Instant::now();
        let mut ensured = false;
        let mut failures = 0u32;
        let mut last_lag_report = Instant::now() - LAG_REPORT_INTERVAL;
        loop {
            let wait = match self.turn(&mut cursor, &mut renewed, &mut ensured).await {
                Ok(Some(applied)) => {
                    failures = 0;
                    if applied > 0 { Duration::ZERO } else { POLL }
                }
                Ok(None) => POLL,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.failed(&e, failures);
                    backoff(failures)
                }
            };
            if last_lag_report.elapsed() >= LAG_REPORT_INTERVAL {
                last_lag_report = Instant::now();
                self.measure_lag(cursor.as_ref().map(OutboxCursor::watermark)).await;
            }
            // Only the lease holder is woken by writes: another replica would try for the lease
            // on every write. While failing, the back-off decides.
            let woken = cursor.is_some() && failures == 0;
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified(), if woken => {}
            }
        }
        if cursor.is_some()
            && let Err(e) = self.db.release_lease(LEASE, &self.holder).await
        {
            tracing::warn!(error = %e, "giving up the Milvus sync lease failed; it expires by itself");
        }
    }

    /// One turn: keep or take the lease, then apply one batch. `None` when another replica holds
    /// the lease.
    async fn turn(
        &self,
        cursor: &mut Option<OutboxCursor>,
        renewed: &mut Instant,
        ensured: &mut bool,
    ) -> Result<Option<usize>, SyncError> {
        if cursor.is_some() {
            if renewed.elapsed() >= RENEW_EVERY {
                if self.db.renew_lease(LEASE, &self.holder, LEASE_TTL).await? {
                    *renewed = Instant::now();
                } else {
                    tracing::warn!("the Milvus sync lease lapsed; another replica may sync now");
                    *cursor = None;
                    self.status.lock().expect("status lock").syncing_here = false;
                    return Ok(None);
                }
            }
        } else if self.db.take_lease(LEASE, &self.holder, LEASE_TTL).await? {
            *renewed = Instant::now();
            // Continue from where the last holder stopped (its stored watermark).
            let watermark = self.db.consumer_watermark(super::CONSUMER).await?;
            tracing::info!(watermark, "this replica now syncs Milvus");
            let mut taken = OutboxCursor::at(watermark, []);
            self.skip_compacted(&mut taken).await?;
            *cursor = Some(taken);
            // The schedule starts with the lease: a periodic pass one interval from now.
            *self.reconciled_at.lock().expect("schedule lock") = Some(Instant::now());
            let mut status = self.status.lock().expect("status lock");
            status.syncing_here = true;
            status.watermark = watermark;
        } else {
            return Ok(None);
        }
        if !*ensured {
            self.milvus.ensure_collection().await?;
            *ensured = true;
        }
        let cursor = cursor.as_mut().expect("held above");
        let applied = self.apply_batch(cursor).await?;
        self.reconcile_if_due().await?;
        Ok(Some(applied))
    }

    /// Applies the next batch of outbox events; returns how many were new.
    async fn apply_batch(&self, cursor: &mut OutboxCursor) -> Result<usize, SyncError> {
        let mut before = cursor.watermark();
        let mut events = self.db.outbox_after(before, BATCH).await?;
        // Ids missing right past the watermark: a transaction in flight, or compaction.
        if events.first().is_some_and(|e| e.id > before + 1) && self.skip_compacted(cursor).await? {
            before = cursor.watermark();
            events = self.db.outbox_after(before, BATCH).await?;
        }
        let fresh = cursor.fresh(&events);
        let ids: BTreeSet<ProductId> = fresh.iter().filter_map(|e| e.product_id.parse().ok()).collect();
        if !ids.is_empty() {
            let ids: Vec<ProductId> = ids.into_iter().collect();
            let live = self.db.get_products(&ids, Visibility::Everything).await?;
            let rows: Vec<Row> = live.iter().filter_map(|(product, _)| Row::of(product)).collect();
            let kept: BTreeSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
            let gone: Vec<String> =
                ids.iter().map(ToString::to_string).filter(|id| !kept.contains(id.as_str())).collect();
            self.milvus.delete(&gone).await?;
            self.milvus.upsert(&rows).await?;
        }
        // Acknowledged: only now do these events count as applied.
        let applied = fresh.len();
        cursor.applied(fresh.iter().map(|e| e.id));
        if cursor.watermark() != before {
            self.db.set_consumer_watermark(super::CONSUMER, cursor.watermark()).await?;
        }
        if self.breaker.succeeded() {
            tracing::info!("Milvus answers again; the sync drains the outbox backlog");
        }
        let mut status = self.status.lock().expect("status lock");
        status.watermark = cursor.watermark();
        if fresh.is_empty() && events.is_empty() {
            // Caught up: no need to wait for the next measurement to say so.
            (status.lag_events, status.lag) = (0, Duration::ZERO);
        }
        if applied > 0 {
            status.applied += applied as u64;
            status.last_apply = Some(crate::domain::product::Timestamp::now());
            metrics::counter!("soko_milvus_sync_events_total").increment(applied as u64);
        }
        status.last_error = None;
        Ok(applied)
    }

    /// When the outbox was compacted past the cursor, the events in between cannot be replayed:
    /// the cursor goes on from the compaction point and a reconciliation (which compares every
    /// id with the products table) repairs what they would have done. Returns whether it did.
    async fn skip_compacted(&self, cursor: &mut OutboxCursor) -> Result<bool, SyncError> {
        let through = crate::outbox::compacted_through(&self.db).await?;
        if through <= cursor.watermark() {
            return Ok(false);
        }
        tracing::warn!(
            watermark = cursor.watermark(),
            compacted_through = through,
            "the outbox was compacted past the Milvus sync's position; reconciling Milvus with the database"
        );
        super::reconcile::request(&self.db, &self.holder, "the outbox was compacted past the Milvus sync").await?;
        cursor.skip_to(through);
        self.db.set_consumer_watermark(super::CONSUMER, cursor.watermark()).await?;
        Ok(true)
    }

    /// Reconciles when a request is waiting (looked for every [`RENEW_EVERY`]) or the periodic
    /// interval has passed. Runs between batches, so none interleaves with it.
    async fn reconcile_if_due(&self) -> Result<(), SyncError> {
        let look = self.requests_checked_at.lock().expect("schedule lock").is_none_or(|at| at.elapsed() >= RENEW_EVERY);
        let mut request = None;
        if look {
            *self.requests_checked_at.lock().expect("schedule lock") = Some(Instant::now());
            let settings = self.db.settings().await?;
            let value = |name: &str| settings.iter().find(|r| r.name == name).map(|r| r.value.clone());
            if let Some(id) = value(super::reconcile::REQUEST)
                && value(super::reconcile::DONE).is_none_or(|done| done.split(' ').next() != Some(id.as_str()))
            {
                request = Some(id);
            }
        }
        let periodic = match (self.milvus.config().reconcile_every, *self.reconciled_at.lock().expect("schedule lock"))
        {
            (Some(every), Some(at)) => at.elapsed() >= every,
            _ => false,
        };
        if request.is_none() && !periodic {
            return Ok(());
        }
        let started = Instant::now();
        let report = super::reconcile::reconcile(&self.db, &self.milvus).await?;
        *self.reconciled_at.lock().expect("schedule lock") = Some(Instant::now());
        tracing::info!(
            %report,
            requested = request.is_some(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Milvus reconciled with the database"
        );
        metrics::counter!("soko_milvus_reconcile_repairs_total").increment(report.upserted + report.deleted);
        self.status.lock().expect("status lock").last_reconcile =
            Some((crate::domain::product::Timestamp::now(), report));
        if let Some(id) = request {
            self.db
                .put_setting(&crate::store::settings::SettingRow {
                    name: super::reconcile::DONE.into(),
                    value: format!("{id} {report}"),
                    reason: String::new(),
                    updated_at: crate::domain::product::Timestamp::now().0,
                    updated_by: format!("soko:{}", self.holder),
                })
                .await?;
        }
        Ok(())
    }

    /// Asks the syncing replica, whichever it is, to reconcile soon.
    pub async fn request_reconcile(&self, by: &str, reason: &str) -> Result<String, StoreError> {
        super::reconcile::request(&self.db, by, reason).await
    }

    fn failed(&self, error: &SyncError, failures: u32) {
        let transient = match error {
            SyncError::Milvus(e) => {
                self.breaker.failed(e);
                e.is_transient()
            }
            SyncError::Store(_) => true,
        };
        metrics::counter!("soko_milvus_sync_errors_total").increment(1);
        if transient {
            tracing::warn!(error = %error, failures, "Milvus sync failed; retrying with back-off");
        } else {
            tracing::error!(error = %error, failures, "Milvus sync failed and needs an operator; retrying slowly");
        }
        self.status.lock().expect("status lock").last_error = Some(error.to_string());
    }

    /// How far the shared watermark is behind the outbox: this replica's own when it syncs,
    /// the stored one otherwise.
    async fn measure_lag(&self, held: Option<i64>) {
        let watermark = match held {
            Some(watermark) => watermark,
            None => match self.db.consumer_watermark(super::CONSUMER).await {
                Ok(watermark) => watermark,
                Err(e) => return tracing::debug!(error = %e, "reading the Milvus watermark failed"),
            },
        };
        let Ok((head, oldest)) = self.db.outbox_lag(watermark).await else { return };
        let now = crate::domain::product::Timestamp::now().0;
        let lag = Duration::from_micros(oldest.map_or(0, |t| (now - t).max(0)) as u64);
        let lag_events = (head - watermark).max(0);
        metrics::gauge!("soko_milvus_sync_lag_events").set(lag_events as f64);
        metrics::gauge!("soko_milvus_sync_lag_seconds").set(lag.as_secs_f64());
        let mut status = self.status.lock().expect("status lock");
        (status.watermark, status.head, status.lag_events, status.lag) = (watermark, head, lag_events, lag);
    }
}

/// Exponential back-off from [`BACKOFF_BASE`], capped at [`BACKOFF_MAX`], with up to half of it
/// random so that replicas (and retries after a Milvus restart) do not arrive in step.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(BACKOFF_MAX);
    let jitter = getrandom::u64().unwrap_or_default() % (exp.as_millis() as u64 / 2 + 1);
    (exp / 2 + Duration::from_millis(jitter)).max(BACKOFF_BASE / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_grows_to_a_cap_and_is_jittered() {
        assert!(backoff(1) <= BACKOFF_BASE);
        assert!(backoff(4) >= BACKOFF_BASE * 4 && backoff(4) <= BACKOFF_BASE * 8);
        for failures in [10, 100, u32::MAX] {
            let wait = backoff(failures);
            assert!(wait >= BACKOFF_MAX / 2 && wait <= BACKOFF_MAX, "{wait:?}");
        }
        let draws: BTreeSet<Duration> = (0..20).map(|_| backoff(8)).collect();
        assert!(draws.len() > 1, "jittered");
    }
}
