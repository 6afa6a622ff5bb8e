//! The shape shared by the layers that decide, before the handler runs, whether a call may go on:
//! identify the caller, rate-limit, authorize, shed load. A gate looks at the request (and may
//! annotate it); it either admits the call — optionally adding response headers and holding a
//! guard until the handler's response is ready — or answers with a gRPC status itself.

use std::{
    any::Any,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::HeaderMap;
use tonic::Status;
use tower::{Layer, Service};

/// A gate's verdict on an admitted call.
#[derive(Default)]
pub struct Admit {
    /// Headers to add to the response (e.g. the remaining rate-limit budget).
    pub headers: HeaderMap,
    /// Held until the handler has produced its response (e.g. a concurrency permit).
    pub guard: Option<Box<dyn Any + Send>>,
}

/// A refusal: the status and any metadata that goes with it (e.g. `retry-after`).
pub struct Refusal {
    pub status: Status,
    pub headers: HeaderMap,
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Self {
        Self { status, headers: HeaderMap::new() }
    }
}

pub trait Gate: Send + Sync + 'static {
    fn check<B: Send>(&self, request: &mut http::Request<B>) -> impl Future<Output = Result<Admit, Refusal>> + Send;
}

/// Wraps a gate as a tower layer. The gate is shared, not cloned, per call: some gates own
/// costly state (token keys, validation rules) that a per-call clone would copy every time.
#[derive(Clone)]
pub struct GateLayer<G>(Arc<G>);

impl<G> GateLayer<G> {
    pub fn new(gate: G) -> Self {
        Self(Arc::new(gate))
    }
}

impl<S, G: Gate> Layer<S> for GateLayer<G> {
    type Service = GateService<S, G>;
    fn layer(&self, inner: S) -> Self::Service {
        GateService { inner, gate: self.0.clone() }
    }
}

pub struct GateService<S, G> {
    inner: S,
    gate: Arc<G>,
}

impl<S: Clone, G> Clone for GateService<S, G> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), gate: self.gate.clone() }
    }
}

impl<S, G, B> Service<http::Request<B>> for GateService<S, G>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    G: Gate,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that must serve this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        Box::pin(async move {
            match gate.check(&mut request).await {
                Ok(admit) => {
                    let mut response = inner.call(request).await?;
                    drop(admit.guard);
                    response.headers_mut().extend(admit.headers);
                    Ok(response)
                }
                Err(refusal) => {
                    let mut response = refusal.status.into_http::<tonic::body::Body>();
                    response.headers_mut().extend(refusal.headers);
                    Ok(response)
                }
            }
        })
    }
}
