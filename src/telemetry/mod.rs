//! Logs, traces and metrics.
//!
//! Logging: JSON lines in production (one object per event, for log shippers), readable text in
//! development. Traces: every gRPC call is a span, with child spans for the database, Redis and
//! the embedder, exported over OTLP when an endpoint is configured ([`otlp`]). Metrics: one
//! Prometheus recorder for the process.

pub mod otlp;
pub mod sentry;

use std::sync::OnceLock;

use opentelemetry::trace::{TraceContextExt, TracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, filter::DynFilterFn, fmt, prelude::*};

use crate::configuration::{Config, LogFormat};

static EXPORTING: OnceLock<otlp::Exporting> = OnceLock::new();

/// Installs the global subscriber, and starts the trace export when one is configured. Safe to
/// call more than once (tests start many servers); only the first call takes effect. Must run
/// inside the tokio runtime.
pub fn init(config: &Config) {
    // Per-layer filters: `RUST_LOG` decides what is logged, not what is traced, so a quiet log
    // level does not empty the traces.
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match config.log_format {
        // The call's span once (`span`), not again in a list of every enclosing span: each copy
        // costs a parse and a write of the span's fields on every line (issue 20).
        LogFormat::Json => {
            fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
        }
        // Colour codes only for a terminal: piped into a file or a log shipper they are bytes of
        // noise on every line (issue 20).
        LogFormat::Pretty => {
            fmt::layer().compact().with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())).boxed()
        }
    };
    let traces = config.traces.as_ref().and_then(|export| match otlp::Exporting::start(export) {
        Ok(exporting) => {
            let tracer = exporting.provider.tracer("soko");
            let _ = EXPORTING.set(exporting);
            Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(traced()))
        }
        Err(e) => {
            // Tracing is for diagnosis; a broken exporter must not stop the service.
            eprintln!("soko: trace export is off: {e:#}");
            None
        }
    });
    let sentry = config.sentry.is_some().then(sentry::tracing_layer);
    let _ = tracing_subscriber::registry().with(logs.with_filter(filter)).with(traces).with(sentry).try_init();
}

/// What becomes a span in a trace: each call's `rpc` span, and Soko's spans inside a call (the
/// database, Redis, the embedder). Background loops (the prober's pings, the followers' polls)
/// would otherwise start a trace of their own every half second, and log events stay in the log.
fn traced<S>() -> impl tracing_subscriber::layer::Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let ours = |meta: &tracing::Metadata<'_>| meta.is_span() && meta.target().starts_with("soko");
    DynFilterFn::new(move |meta, cx| ours(meta) && (meta.name() == CALL_SPAN || cx.lookup_current().is_some()))
        // Decided once per callsite where possible: without it every `trace!` in h2 and hyper
        // would ask this filter on every call (measured: 38% of GetProduct's throughput).
        .with_callsite_filter(move |meta| {
            if ours(meta) { tracing::subscriber::Interest::sometimes() } else { tracing::subscriber::Interest::never() }
        })
        .with_max_level_hint(tracing::level_filters::LevelFilter::DEBUG)
}

/// The name of the span each gRPC call is served in (see the request log).
pub const CALL_SPAN: &str = "rpc";

/// Whether spans are exported: when not, the call path skips the trace context work.
pub fn tracing_enabled() -> bool {
    EXPORTING.get().is_some()
}

/// Sends the spans still queued, waiting at most `timeout`; called once on shutdown.
pub async fn flush_traces(timeout: std::time::Duration) {
    if let Some(exporting) = EXPORTING.get() {
        exporting.flush(timeout).await;
    }
}

/// Makes `span` the continuation of the caller's trace when the request carries a W3C
/// `traceparent`, and returns the trace id to log (`None` when the span is not traced).
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator;
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    (trace_id != opentelemetry::trace::TraceId::INVALID).then(|| trace_id.to_string())
}

/// Sets the call span's outcome in the trace only (not as a log field, which would make the JSON
/// log layer re-parse the span's fields on every call).
pub fn end_call_span(span: &tracing::Span, grpc_code: Option<i32>, failed: bool) {
    if let Some(code) = grpc_code {
        span.set_attribute("rpc.grpc.status_code", i64::from(code));
    }
    span.set_status(if failed { opentelemetry::trace::Status::error("") } else { opentelemetry::trace::Status::Ok });
}

/// Writes the current span's `traceparent` into outgoing gRPC metadata, so the callee's spans
/// join the same trace.
pub fn propagate(metadata: &mut tonic::metadata::MetadataMap) {
    use opentelemetry::propagation::TextMapPropagator;
    if !tracing_enabled() {
        return;
    }
    let cx = tracing::Span::current().context();
    opentelemetry_sdk::propagation::TraceContextPropagator::new().inject_context(&cx, &mut Metadata(metadata));
}

struct Headers<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) =
            (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), tonic::metadata::MetadataValue::try_from(value))
        {
            self.0.insert(key, value);
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use (tests start many servers in one
/// process; metrics are per process either way).
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        // Every `*_seconds` histogram has buckets, so Prometheus can aggregate latency across
        // replicas (the exporter's default, a summary, cannot be).
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                crate::middleware::request_log::HANDLING_BUCKETS,
            )
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding application's); then ours only
        // renders what it was given.
        let _ = metrics::set_global_recorder(recorder);
        // The usual Prometheus build-info idiom: a constant 1 whose labels say which build runs.
        metrics::gauge!(
            "soko_build_info",
            "version" => crate::build_info::VERSION,
            "commit" => crate::build_info::GIT_COMMIT
        )
        .set(1.0);
        // Counters of rare events exist from the start at zero: `rate()` over a series that
        // appears only with its first event reads nothing at all before it, and the dashboard's
        // panels would be empty rather than flat.
        for name in [
            "soko_requests_shed_total",
            "soko_requests_deadline_exceeded_total",
            "soko_product_cache_evictions_total",
            "soko_panics_total",
        ] {
            metrics::counter!(name).absolute(0);
        }
        for dependency in ["database", "image embedder"] {
            metrics::counter!("soko_dependency_errors_total", "dependency" => dependency).absolute(0);
        }
        metrics::counter!(otlp::EXPORTED).absolute(0);
        handle
    })
}
