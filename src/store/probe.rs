//! The database prober: one round trip every [`INTERVAL`], off the request path, feeding the
//! database's circuit breaker. Calls never wait on the prober; what it learns (the database is
//! not answering) turns on automatic read-only mode, so writes are refused at once with a reason
//! clients recognise instead of each waiting out a pool checkout, and it turns it off again when
//! the database answers.

use std::{sync::Arc, time::Duration};

use super::Db;
use crate::{breaker::CircuitBreaker, periodic::Ticks};

pub const INTERVAL: Duration = Duration::from_millis(500);
/// A ping slower than this counts as a failure: a database this slow is not fit for writes.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed pings in a row that open the breaker: one lost packet is not an outage.
const THRESHOLD: u32 = 2;
/// How long the breaker stays open before the next ping probes again.
const OPEN_FOR: Duration = Duration::from_secs(1);

pub fn database_breaker() -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new("database", THRESHOLD, OPEN_FOR))
}

/// Pings the database until `stop` resolves.
pub async fn run(db: Db, breaker: Arc<CircuitBreaker>, stop: impl Future<Output = ()>) {
    let mut ticks = Ticks::new(INTERVAL, stop);
    while ticks.next().await {
        publish_pool_metrics(&db);
        if !breaker.allows() {
            continue;
        }
        match tokio::time::timeout(PING_TIMEOUT, db.ping()).await {
            Ok(Ok(())) => {
                breaker.succeeded();
            }
            Ok(Err(e)) => {
                breaker.failed(&e);
            }
            Err(_) => {
                breaker.failed(&format_args!("no answer within {PING_TIMEOUT:?}"));
            }
        }
    }
}

/// The pool's state as metrics, sampled with each ping: connections in use and idle, calls waiting
/// for one, and checkouts by outcome with the time spent waiting (bb8 keeps the totals).
fn publish_pool_metrics(db: &Db) {
    let state = db.pool_state();
    let stats = &state.statistics;
    let in_use = state.connections.saturating_sub(state.idle_connections);
    metrics::gauge!("soko_db_pool_connections", "state" => "in_use").set(f64::from(in_use));
    metrics::gauge!("soko_db_pool_connections", "state" => "idle").set(f64::from(state.idle_connections));
    metrics::gauge!("soko_db_pool_waiting").set(stats.pending_gets() as f64);
    for (outcome, total) in
        [("direct", stats.get_direct), ("waited", stats.get_waited), ("timed_out", stats.get_timed_out)]
    {
        metrics::counter!("soko_db_pool_checkouts_total", "outcome" => outcome).absolute(total);
    }
    // A gauge that only grows: the metrics crate's counters are integers, and rate() reads it alike.
    metrics::gauge!("soko_db_pool_wait_seconds_total").set(stats.get_wait_time.as_secs_f64());
}
