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
