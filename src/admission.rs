//! Admission for expensive work (password hashing today): a call is admitted only when the work
//! already queued ahead of it can be done within a short bound and within the call's deadline,
//! judged by the queue's length and the measured service time. Everything else is refused at
//! once with the time after which a retry would likely be admitted, rather than queued for
//! seconds to fail anyway (issue 23's drill: Logins at 5× capacity waited up to 10 s).
//!
//! `soko_admission_total{class, outcome}` counts `admitted` and `refused` calls;
//! `soko_admission_service_seconds{class}` is the measured service time the decisions use.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

tokio::task_local! {
    /// When the call being served must have answered by.
    static CALL_DEADLINE: tokio::time::Instant;
}

/// Runs `call` with its deadline known to every admission decision made inside it (the deadline
/// layer wraps each call in this).
pub fn within_deadline<F: Future>(ends: tokio::time::Instant, call: F) -> impl Future<Output = F::Output> {
    CALL_DEADLINE.scope(ends, call)
}

/// How long the call being served has left; None outside a call.
fn remaining() -> Option<Duration> {
    CALL_DEADLINE.try_with(|ends| ends.saturating_duration_since(tokio::time::Instant::now())).ok()
}

/// One class of expensive work and its queue.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    class: &'static str,
    permits: Arc<Semaphore>,
    concurrency: u32,
    /// Calls waiting for a permit.
    queued: AtomicUsize,
    /// Recent service time, a moving average in microseconds.
    service_us: AtomicU64,
    max_wait: Duration,
}

/// Refused: the queue ahead would not be through in time. Retrying after `retry_after` is
/// likely to be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub retry_after: Duration,
}

/// A running piece of admitted work; dropping it frees its slot and records its service time.
pub struct Admitted {
    inner: Arc<Inner>,
    started: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    /// `concurrency` pieces of work run at once; a call waits at most `max_wait` for its turn.
    /// `expected_service` is the service time assumed until some work has been measured.
    pub fn new(class: &'static str, concurrency: usize, max_wait: Duration, expected_service: Duration) -> Self {
        let concurrency = concurrency.clamp(1, u32::MAX as usize);
        Self {
            inner: Arc::new(Inner {
                class,
                permits: Arc::new(Semaphore::new(concurrency)),
                concurrency: concurrency as u32,
                queued: AtomicUsize::new(0),
                service_us: AtomicU64::new(micros(expected_service)),
                max_wait,
            }),
        }
    }

    /// The service time the decisions use now.
    pub fn service_time(&self) -> Duration {
        Duration::from_micros(self.inner.service_us.load(Ordering::Relaxed))
    }

    /// Admits the call now, or once the work ahead of it is done if that is soon enough: within
    /// the class's bound and before the call's deadline, leaving time for its own service.
    pub async fn admit(&self) -> Result<Admitted, Refused> {
        let deadline = remaining();
        let inner = &self.inner;
        let service = self.service_time();
        let admitted = |permit| {
            metrics::counter!("soko_admission_total", "class" => inner.class, "outcome" => "admitted").increment(1);
            Admitted { inner: Arc::clone(inner), started: Instant::now(), _permit: permit }
        };
        if inner.queued.load(Ordering::Acquire) == 0
            && let Ok(permit) = Arc::clone(&inner.permits).try_acquire_owned()
        {
            return Ok(admitted(permit));
        }
        // Each round of `concurrency` calls ahead takes one service time; this call waits for
        // the rounds ahead of it and the one in progress.
        let ahead = inner.queued.load(Ordering::Acquire) as u32;
        let expected_wait = service * (ahead / inner.concurrency + 1);
        let budget = deadline.map_or(inner.max_wait, |d| inner.max_wait.min(d.saturating_sub(service)));
        let refused = || {
            metrics::counter!("soko_admission_total", "class" => inner.class, "outcome" => "refused").increment(1);
            Refused { retry_after: expected_wait.max(Duration::from_millis(100)) }
        };
        if expected_wait > budget {
            return Err(refused());
        }
        inner.queued.fetch_add(1, Ordering::AcqRel);
        let waited = tokio::time::timeout(budget, Arc::clone(&inner.permits).acquire_owned()).await;
        inner.queued.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(permit)) => Ok(admitted(permit)),
            // Slower than measured (a burst of slow work): refused at the bound, not later.
            _ => Err(refused()),
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // A moving average over about the last eight: follows a change of machine load within
        // a few calls without one slow call swinging every decision.
        let sample = micros(self.started.elapsed());
        let old = self.inner.service_us.load(Ordering::Relaxed);
        let new = (old * 7 + sample) / 8;
        self.inner.service_us.store(new.max(1), Ordering::Relaxed);
        metrics::gauge!("soko_admission_service_seconds", "class" => self.inner.class).set(new as f64 / 1e6);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work of 40 ms, one at a time, with a 220 ms bound: a burst of 20 gets about six through
    /// (the one running and five queued), and the others are refused at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_is_admitted_up_to_the_bound_and_the_rest_refused_at_once() {
        let admission = Admission::new("test", 1, Duration::from_millis(220), Duration::from_millis(40));
        let mut calls = Vec::new();
        for _ in 0..20 {
            let admission = admission.clone();
            calls.push(tokio::spawn(async move {
                let asked = Instant::now();
                match admission.admit().await {
                    Ok(work) => {
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        drop(work);
                        Ok(asked.elapsed())
                    }
                    Err(refused) => Err((asked.elapsed(), refused.retry_after)),
                }
            }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (mut admitted, mut refused) = (Vec::new(), Vec::new());
        for call in calls {
            match call.await.unwrap() {
                Ok(took) => admitted.push(took),
                Err(r) => refused.push(r),
            }
        }
        assert!((3..=7).contains(&admitted.len()), "admitted {admitted:?}");
        assert!(admitted.iter().all(|took| *took < Duration::from_millis(400)), "{admitted:?}");
        // At most one queued call can find the work slower than measured and be refused at the
        // bound; every other refusal is immediate.
        let late = refused.iter().filter(|(took, _)| *took >= Duration::from_millis(50)).count();
        assert!(late <= 1, "{refused:?}");
        assert!(refused.iter().all(|(_, after)| *after >= Duration::from_millis(100)), "{refused:?}");
        // Measured, not assumed: the 40 ms of work (and the scheduling around it).
        assert!(admission.service_time() >= Duration::from_millis(35), "{:?}", admission.service_time());
    }

    #[tokio::test]
    async fn a_call_whose_deadline_is_too_near_is_refused_rather_than_left_to_time_out() {
        let admission = Admission::new("test", 1, Duration::from_secs(5), Duration::from_millis(100));
        let _busy = admission.admit().await.unwrap();
        let asked = Instant::now();
        let ends = tokio::time::Instant::now() + Duration::from_millis(150);
        assert!(within_deadline(ends, admission.admit()).await.is_err());
        assert!(asked.elapsed() < Duration::from_millis(50));
    }
}
