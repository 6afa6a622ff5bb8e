//! The loop every background follower shares: wake on a fixed interval until told to stop.
//! A step that overruns delays the next tick rather than bunching ticks up.
//!
//! ```ignore
//! let mut ticks = Ticks::new(INTERVAL, stop);
//! while ticks.next().await {
//!     // one step
//! }
//! ```

use std::{future::Future, pin::Pin, time::Duration};

pub struct Ticks<S> {
    ticker: tokio::time::Interval,
    stop: Pin<Box<S>>,
}

impl<S: Future<Output = ()>> Ticks<S> {
    pub fn new(interval: Duration, stop: S) -> Self {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { ticker, stop: Box::pin(stop) }
    }

    /// Waits for the next tick (the first comes at once); false once `stop` has resolved. A step
    /// in progress finishes before `stop` is seen.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            () = &mut self.stop => false,
            _ = self.ticker.tick() => true,
        }
    }
}
