//! Spans to an OTLP collector over gRPC, on the server's own tonic.
//!
//! The SDK's batch processor runs the exporter on a thread of its own and counts the spans it
//! drops only in its internal log. Ours is a bounded queue in front of one tokio task: a request
//! only ever does a `try_send`, so a collector that is slow or down costs the request nothing,
//! and every span that does not reach the collector is counted in
//! `soko_trace_spans_dropped_total{reason}`.

use std::time::Duration;

use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor},
};
use tokio::sync::{mpsc, oneshot};

/// Spans that reached the collector.
pub const EXPORTED: &str = "soko_trace_spans_exported_total";
/// Spans that did not, by `reason`: `queue_full` (the exporter fell behind) or `export_failed`.
pub const DROPPED: &str = "soko_trace_spans_dropped_total";

/// Where and how spans are exported, from the standard `OTEL_*` variables (see the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://otel-collector:4317`.
    pub endpoint: String,
    /// How long finished spans wait to be sent with others (`OTEL_BSP_SCHEDULE_DELAY`).
    pub schedule_delay: Duration,
    /// How long one export may take before its spans count as dropped (`OTEL_BSP_EXPORT_TIMEOUT`).
    pub export_timeout: Duration,
    /// Finished spans held while the exporter is busy (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queue: usize,
    /// Spans per export call (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub max_batch: usize,
}

/// The running export: the tracer provider and the queue's flush handle.
pub struct Exporting {
    pub provider: SdkTracerProvider,
    queue: mpsc::Sender<Message>,
}

enum Message {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

impl Exporting {
    /// Builds the exporter and starts the export task. Must run inside the tokio runtime.
    pub fn start(config: &TraceExport) -> anyhow::Result<Self> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.export_timeout)
            .build()?;
        let resource = resource();
        exporter.set_resource(&resource);
        let (queue, receiver) = mpsc::channel(config.max_queue);
        tokio::spawn(export_loop(exporter, receiver, config.clone()));
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(Queue { queue: queue.clone() })
            .build();
        Ok(Self { provider, queue })
    }

    /// Sends what is queued and waits for it, up to `timeout`: called once on shutdown so the
    /// last calls' spans are not lost.
    pub async fn flush(&self, timeout: Duration) {
        let (done, sent) = oneshot::channel();
        let flushed = async {
            if self.queue.send(Message::Flush(done)).await.is_ok() {
                let _ = sent.await;
            }
        };
        let _ = tokio::time::timeout(timeout, flushed).await;
    }
}

/// `service.name` is `soko` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` say
/// otherwise; the version is always the build's.
fn resource() -> Resource {
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut builder = Resource::builder();
    if !named_by_env {
        builder = builder.with_service_name("soko");
    }
    builder.with_attribute(KeyValue::new("service.version", crate::build_info::VERSION)).build()
}

/// The span processor: hands each sampled, finished span to the export task without waiting.
#[derive(Debug)]
struct Queue {
    queue: mpsc::Sender<Message>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(Message::Span(Box::new(span))).is_err() {
            metrics::counter!(DROPPED, "reason" => "queue_full").increment(1);
        }
    }

    /// The SDK calls this from synchronous code; the export task does the work, and
    /// [`Exporting::flush`] is the way to wait for it.
    fn force_flush(&self) -> OTelSdkResult {
        let (done, _) = oneshot::channel();
        let _ = self.queue.try_send(Message::Flush(done));
        Ok(())
    }

    /// The export task ends by itself when the last sender is gone.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Collects spans into batches and exports a batch when it is full, when the schedule delay has
/// passed, or when asked to flush. One export at a time: while the collector is slow, spans wait
/// in the bounded queue and the ones that do not fit are dropped (and counted) by [`Queue`].
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut receiver: mpsc::Receiver<Message>,
    config: TraceExport,
) {
    let mut batch = Vec::with_capacity(config.max_batch);
    let mut tick = tokio::time::interval(config.schedule_delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = receiver.recv() => match message {
                Some(Message::Span(span)) => {
                    batch.push(*span);
                    if batch.len() >= config.max_batch {
                        export(&exporter, &mut batch, config.export_timeout).await;
                    }
                }
                Some(Message::Flush(done)) => {
                    export(&exporter, &mut batch, config.export_timeout).await;
                    let _ = done.send(());
                }
                None => {
                    export(&exporter, &mut batch, config.export_timeout).await;
                    return;
                }
            },
            _ = tick.tick() => export(&exporter, &mut batch, config.export_timeout).await,
        }
    }
}

async fn export(exporter: &opentelemetry_otlp::SpanExporter, batch: &mut Vec<SpanData>, timeout: Duration) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    let count = spans.len() as u64;
    match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(Ok(())) => metrics::counter!(EXPORTED).increment(count),
        Ok(Err(e)) => {
            metrics::counter!(DROPPED, "reason" => "export_failed").increment(count);
            tracing::debug!(error = %e, spans = count, "trace export failed");
        }
        Err(_) => {
            metrics::counter!(DROPPED, "reason" => "export_failed").increment(count);
            tracing::debug!(spans = count, "trace export timed out");
        }
    }
}
