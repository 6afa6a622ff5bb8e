//! Request ids and the one log line per call.
//!
//! The caller's `x-request-id` is kept when it looks like an id (so a trace can cross services),
//! otherwise a new one is made; either way it is echoed in the response headers and carried by the
//! span every log line of the call is written in. The gRPC status usually arrives in the trailers,
//! after the handler has returned, so the line is written when the response body ends.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Instant,
};

use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Instrument;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Calls finished, by `method` and `code` (the canonical upper-case status name).
pub const HANDLED: &str = "soko_grpc_server_handled_total";
/// Server-side latency of each call, by `method`, to the end of its response.
pub const HANDLING_SECONDS: &str = "soko_grpc_server_handling_seconds";
/// Histogram buckets for gRPC latency: 1 ms to 10 s, dense where the SLO (250 ms) sits.
pub const HANDLING_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The id of the call being served, available to handlers as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Where the identify gate leaves the caller's name (an id, never a credential) for the call's
/// log line. A field of the event rather than of the span: recording a span field after the
/// span starts makes the JSON log layer parse and rewrite all its fields, on every call.
#[derive(Debug, Clone, Default)]
pub struct CallerSlot(Arc<OnceLock<String>>);

impl CallerSlot {
    pub fn set(&self, name: String) {
        let _ = self.0.set(name);
    }
}

/// Accepts caller-supplied ids of up to 128 characters of `[A-Za-z0-9._:-]`; anything else could
/// forge or break log lines.
fn caller_id(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !raw.is_empty()
        && raw.len() <= 128
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    ok.then(|| raw.to_owned())
}

/// Successful calls since start, for sampling their log lines.
static SUCCESSES: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy)]
pub struct RequestLogLayer {
    success_every: u64,
}

impl RequestLogLayer {
    /// Logs one successful call in `success_every` (every one at 1); every other call always.
    pub fn new(success_every: u64) -> Self {
        Self { success_every: success_every.max(1) }
    }
}

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestLog { inner, success_every: self.success_every }
    }
}

#[derive(Debug, Clone)]
pub struct RequestLog<S> {
    inner: S,
    success_every: u64,
}

impl<S, B, ResBody> Service<http::Request<B>> for RequestLog<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + Send + 'static,
{
    type Response = http::Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let id = caller_id(request.headers()).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        request.extensions_mut().insert(RequestId(id.clone()));
        let caller = CallerSlot::default();
        request.extensions_mut().insert(caller.clone());
        let method = request.uri().path();
        let start = Instant::now();
        let metric_method = crate::policy::metric_method(method);
        // The `otel.*` and `rpc.*` fields only name the span in traces, so they are given (at
        // creation: recording a field later makes the JSON log layer re-parse the span's fields)
        // only when spans are exported. The name is bounded, as for the metrics.
        let traced = crate::telemetry::tracing_enabled();
        // Every field it can have is given here: the JSON log layer parses and rewrites the
        // span's fields each time one is recorded later.
        let peer = peer_addr(request.extensions());
        let span = tracing::info_span!(
            crate::telemetry::CALL_SPAN,
            request_id = %id,
            method = %method,
            trace_id = tracing::field::Empty,
            peer = peer.map(tracing::field::display),
            otel.name = traced.then_some(metric_method),
            otel.kind = traced.then_some("server"),
            rpc.system = traced.then_some("grpc"),
        );
        let trace_id = traced.then(|| crate::telemetry::continue_trace(&span, request.headers())).flatten();
        if let Some(trace_id) = &trace_id {
            span.record("trace_id", trace_id.as_str());
        }
        // The call's own hub (see the Sentry layers in startup), for the event of a failure:
        // the body ends outside the hub's scope.
        let hub = crate::telemetry::sentry::enabled().then(sentry::Hub::current);
        let future = span.in_scope(|| self.inner.call(request));
        let success_every = self.success_every;
        Box::pin(async move {
            let mut record = Record {
                span: span.clone(),
                request_id: id,
                start,
                metric_method,
                success_every,
                caller,
                trace_id,
                hub,
            };
            let mut response = match future.instrument(span).await {
                Ok(response) => response,
                Err(e) => {
                    record.emit("transport error", Some(&e.to_string()));
                    return Err(e);
                }
            };
            if response.extensions().get::<crate::middleware::catch_panic::Panicked>().is_some() {
                // Sentry's panic integration has sent this one, backtrace and all.
                record.hub = None;
            }
            if let Ok(value) = HeaderValue::from_str(&record.request_id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            // Trailers-only responses (errors, mostly) carry the status in the headers.
            let status = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let message = grpc_message(response.headers());
            Ok(response.map(|inner| LoggedBody { inner, record: Some(record), status, message }))
        })
    }
}

/// The peer's socket address, over plaintext or TLS.
fn peer_addr(extensions: &http::Extensions) -> Option<std::net::SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|t| t.get_ref().remote_addr()))
}

/// The status message of a failed call, percent-decoded as gRPC sends it.
fn grpc_message(headers: &HeaderMap) -> Option<String> {
    headers.get("grpc-message")?;
    tonic::Status::from_header_map(headers).map(|s| s.message().to_owned())
}

/// What the log line of one call needs, written once when the call ends.
struct Record {
    span: tracing::Span,
    request_id: String,
    start: Instant,
    /// The method as metrics label it (bounded, see [`crate::policy::metric_method`]).
    metric_method: &'static str,
    success_every: u64,
    caller: CallerSlot,
    trace_id: Option<String>,
    /// Set only when Sentry is on.
    hub: Option<Arc<sentry::Hub>>,
}

impl Record {
    /// One line per call. Its level follows the outcome: our failures at ERROR, dependency and
    /// time-outs at WARN, everything else (successes, and refusals of bad input, rate limits,
    /// credentials) at INFO, since those are the client's doing. The request id, method and peer
    /// are fields of the call's span, so every line of the call carries them, once; the caller
    /// is a field of this line.
    fn emit(self, status: &str, message: Option<&str>) {
        use tonic::Code;
        let elapsed = self.start.elapsed().as_secs_f64();
        let latency_ms = elapsed * 1000.0;
        let _entered = self.span.enter();
        let code = status.parse::<i32>().ok().map(Code::from_i32);
        // RED metrics: every call, by method and outcome. Calls that ended without a status
        // (the client went away, a transport error) count under their own code.
        let code_label = code.map_or("NO_STATUS", crate::api::status::code_name);
        metrics::counter!(HANDLED, "method" => self.metric_method, "code" => code_label).increment(1);
        metrics::histogram!(HANDLING_SECONDS, "method" => self.metric_method).record(elapsed);
        if crate::telemetry::tracing_enabled() {
            // The OpenTelemetry gRPC conventions: on the server, only failures of the server's
            // own making mark the span as an error; refusals of bad input do not.
            let failed = matches!(
                code,
                None | Some(
                    Code::Unknown
                        | Code::DeadlineExceeded
                        | Code::Unimplemented
                        | Code::Internal
                        | Code::Unavailable
                        | Code::DataLoss
                )
            );
            crate::telemetry::end_call_span(&self.span, code.map(|c| c as i32), failed);
        }
        // The canonical name, as the metrics label it; a status that is not a gRPC code (the
        // client went away, a transport error) is printed as it is.
        let status_name = if code.is_some() { code_label } else { status };
        let error = message.filter(|_| code != Some(Code::Ok)).unwrap_or_default();
        // Unset when the call was refused before its caller was identified (load shed).
        let caller = self.caller.0.get().map(String::as_str);
        match code {
            Some(Code::Internal | Code::Unknown | Code::DataLoss) => {
                tracing::error!(status = status_name, caller, error, latency_ms, "rpc finished");
                if let Some(hub) = &self.hub {
                    let failure = crate::telemetry::sentry::CallFailure {
                        method: self.metric_method,
                        code: status_name,
                        message: error,
                        request_id: &self.request_id,
                        trace_id: self.trace_id.as_deref(),
                        caller,
                    };
                    crate::telemetry::sentry::capture_call_failure(hub, &failure);
                }
            }
            Some(Code::Unavailable | Code::DeadlineExceeded) => {
                tracing::warn!(status = status_name, caller, error, latency_ms, "rpc finished")
            }
            Some(Code::Ok) => {
                if self.success_every == 1
                    || SUCCESSES.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.success_every)
                {
                    tracing::info!(status = status_name, caller, latency_ms, "rpc finished")
                }
            }
            _ => tracing::info!(status = status_name, caller, error, latency_ms, "rpc finished"),
        }
    }
}

pin_project! {
    /// The response body, watched for the trailers that carry the gRPC status.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        record: Option<Record>,
        status: Option<String>,
        message: Option<String>,
    }

    impl<B> PinnedDrop for LoggedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.take() {
                // The body was dropped before it ended: the client went away mid-call.
                record.emit(this.status.as_deref().unwrap_or("client disconnected"), this.message.as_deref());
            }
        }
    }
}

impl<B: Body> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(status) = trailers.get("grpc-status").and_then(|v| v.to_str().ok())
                {
                    *this.status = Some(status.to_owned());
                    let message = grpc_message(trailers);
                    if let Some(record) = this.record.take() {
                        record.emit(status, message.as_deref());
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(record) = this.record.take() {
                    record.emit("body error", None);
                }
            }
            None => {
                if let Some(record) = this.record.take() {
                    record.emit(this.status.as_deref().unwrap_or("no status"), this.message.as_deref());
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_ids_are_kept_only_when_safe() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-123.x:y_z"));
        assert_eq!(caller_id(&headers).as_deref(), Some("abc-123.x:y_z"));
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("bad id\" injected"));
        assert_eq!(caller_id(&headers), None);
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert_eq!(caller_id(&headers), None);
    }
}
