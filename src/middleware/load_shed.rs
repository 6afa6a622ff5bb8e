//! Bounds the calls in flight across all connections. Past the bound a call is shed at once
//! with UNAVAILABLE (retryable), rather than queueing until every caller times out.

use std::{sync::Arc, time::Duration};

use tokio::sync::Semaphore;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::gate::{Admit, Gate, Refusal};
use crate::policy;

#[derive(Clone)]
pub struct LoadShed {
    permits: Arc<Semaphore>,
}

impl LoadShed {
    pub fn new(max_in_flight: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_in_flight)) }
    }
}

impl Gate for LoadShed {
    async fn check<B: Send>(&self, request: &mut http::Request<B>) -> Result<Admit, Refusal> {
        // Probes must answer even when the server is saturated, or it gets restarted for being busy.
        if policy::is_exempt(request.uri().path()) {
            return Ok(Admit::default());
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Admit { guard: Some(Box::new(permit)), ..Admit::default() }),
            Err(_) => {
                metrics::counter!("soko_requests_shed_total").increment(1);
                let details = ErrorDetails::with_retry_info(Some(Duration::from_secs(1)));
                Err(Status::with_error_details(Code::Unavailable, "server is overloaded; retry with backoff", details)
                    .into())
            }
        }
    }
}
