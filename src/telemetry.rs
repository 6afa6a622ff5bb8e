//! Logging setup: JSON lines in production (one object per event, for log shippers), readable
//! text in development.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::configuration::{Config, LogFormat};

/// Installs the global subscriber. Safe to call more than once (tests start many servers); only
/// the first call takes effect.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.log_format {
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_current_span(true)).try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
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
        handle
    })
}
