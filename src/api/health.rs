//! `grpc.health.v1.Health`: the overall status (`""`) and one status per service.
//!
//! Our own implementation rather than tonic-health's, because the specification wants `Watch` on
//! an unknown service to stream SERVICE_UNKNOWN (tonic-health errors), `List` to exist, and open
//! `Watch` streams to end when shutdown begins (after telling the watcher NOT_SERVING), so they
//! don't hold the drain open until its deadline.

use std::{collections::BTreeMap, pin::Pin, sync::Arc};

use futures_util::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::proto::grpc::health::v1::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
    health_check_response::ServingStatus, health_server::Health,
};

#[derive(Debug, Clone, Default, PartialEq)]
struct Snapshot {
    statuses: BTreeMap<String, ServingStatus>,
    closing: bool,
}

/// The shared, changeable health of the server. Cheap to clone.
#[derive(Clone)]
pub struct HealthState {
    tx: Arc<watch::Sender<Snapshot>>,
}

impl HealthState {
    /// Starts with every named service (and the overall `""`) NOT_SERVING.
    pub fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Self {
        let statuses = std::iter::once("").chain(services).map(|s| (s.to_owned(), ServingStatus::NotServing)).collect();
        Self { tx: Arc::new(watch::Sender::new(Snapshot { statuses, closing: false })) }
    }

    pub fn set(&self, service: &str, status: ServingStatus) {
        self.tx.send_modify(|s| {
            s.statuses.insert(service.to_owned(), status);
        });
    }

    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.tx.borrow().statuses.get(service).copied()
    }

    /// Marks everything NOT_SERVING and ends open watches: the first step of shutdown.
    pub fn begin_shutdown(&self) {
        self.tx.send_modify(|s| {
            s.statuses.values_mut().for_each(|v| *v = ServingStatus::NotServing);
            s.closing = true;
        });
    }
}

/// The gRPC face of [`HealthState`].
pub struct HealthApi {
    state: HealthState,
}

impl HealthApi {
    pub fn new(state: HealthState) -> Self {
        Self { state }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status.into() }
}

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.state.status(&service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service `{service}`"))),
        }
    }

    async fn list(&self, _: Request<HealthListRequest>) -> Result<Response<HealthListResponse>, Status> {
        let statuses = self.state.tx.borrow().statuses.iter().map(|(k, v)| (k.clone(), response(*v))).collect();
        Ok(Response::new(HealthListResponse { statuses }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let rx = self.state.tx.subscribe();
        // State: receiver, service, last status sent, whether the server is closing.
        let stream =
            futures_util::stream::unfold((rx, service, None, false), |(mut rx, service, last, closed)| async move {
                if closed {
                    return None;
                }
                loop {
                    let (status, closing) = {
                        let snapshot = rx.borrow_and_update();
                        let status = snapshot.statuses.get(&service).copied().unwrap_or(ServingStatus::ServiceUnknown);
                        (status, snapshot.closing)
                    };
                    if last != Some(status) {
                        return Some((Ok(response(status)), (rx, service, Some(status), closing)));
                    }
                    if closing || rx.changed().await.is_err() {
                        return None;
                    }
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }
}
