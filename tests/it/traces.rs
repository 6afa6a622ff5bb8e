//! Traces over OTLP (issue 16), received by a real OTLP/gRPC trace service started by the test:
//! each call is a server span in the caller's trace, with the database and the embedder as its
//! children; the trace id is in the call's log line and goes on to the remote embedder; and a
//! collector that stalls costs the calls nothing but dropped spans, which are counted.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use soko::proto::{
    catalog::{self as pb, catalog_service_client::CatalogServiceClient},
    soko::{
        embedder::v1::{
            EmbedImageRequest, EmbedImageResponse,
            embedder_service_server::{EmbedderService, EmbedderServiceServer},
        },
        search::v1::{SearchByImageRequest, search_service_client::SearchServiceClient},
    },
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

use crate::common::process::SokoProcess;

/// A span received, with its resource's attributes.
type Received = (Vec<KeyValue>, Span);

/// Every span received.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| (resource.clone(), span)));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Starts the trace service on a free port; returns its endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        endpoint
    }

    /// Waits (up to 10 s) until `done` holds for the spans received.
    async fn until(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if done(&spans.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>()) {
                return spans;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{what}: received {spans:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// A model server that answers a fixed vector and keeps the `traceparent` it was sent.
#[derive(Clone, Default)]
struct TracedModel {
    traceparents: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl EmbedderService for TracedModel {
    async fn embed_image(&self, request: Request<EmbedImageRequest>) -> Result<Response<EmbedImageResponse>, Status> {
        if let Some(value) = request.metadata().get("traceparent") {
            self.traceparents.lock().unwrap().push(value.to_str().unwrap().to_owned());
        }
        Ok(Response::new(EmbedImageResponse { vector: vec![0.5; 8] }))
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_is_a_span_in_the_callers_trace_with_its_database_and_embedder_calls_inside() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let model = TracedModel::default();
    let model_url = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(EmbedderServiceServer::new(model.clone()))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        url
    };
    let mut soko = SokoProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ("SOKO_EMBEDDER", "remote"),
        ("SOKO_EMBEDDER_URL", &model_url),
    ])
    .await;
    let channel = soko.channel().await;

    // A call that continues the caller's trace and reads the database.
    let mut request =
        Request::new(pb::GetProductRequest { id: uuid::Uuid::now_v7().to_string(), ..Default::default() });
    request.metadata_mut().insert("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse().unwrap());
    let missing = CatalogServiceClient::new(channel.clone()).get_product(request).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // A call without a traceparent starts a trace of its own, and calls the remote embedder.
    let photo = soko::demo::picture_png(0).unwrap();
    SearchServiceClient::new(channel.clone())
        .search_by_image(SearchByImageRequest { image: photo, ..Default::default() })
        .await
        .unwrap();

    const GET: &str = "/soko.catalog.v1.CatalogService/GetProduct";
    const BY_IMAGE: &str = "/soko.search.v1.SearchService/SearchByImage";
    let spans = collector
        .until("both calls and their children", |spans| {
            let server = |name: &str| spans.iter().find(|s| s.name == name).map(|s| s.span_id.clone());
            let has_child =
                |parent: Option<Vec<u8>>| parent.is_some_and(|p| spans.iter().any(|s| s.parent_span_id == p));
            has_child(server(GET)) && spans.iter().any(|s| s.name == "embed") && server(BY_IMAGE).is_some()
        })
        .await;
    let find = |name: &str| spans.iter().find(|(_, s)| s.name == name).unwrap_or_else(|| panic!("no {name} span"));

    let (resource, get) = find(GET);
    assert_eq!(attribute(resource, "service.name").as_deref(), Some("soko"));
    assert_eq!(attribute(resource, "deployment.environment").as_deref(), Some("test"), "OTEL_RESOURCE_ATTRIBUTES");
    assert_eq!(hex(&get.trace_id), TRACE_ID, "the caller's trace continues");
    assert_eq!(hex(&get.parent_span_id), CALLER_SPAN, "under the caller's span");
    assert_eq!(get.kind, SpanKind::Server as i32);
    assert_eq!(attribute(&get.attributes, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(attribute(&get.attributes, "rpc.grpc.status_code").as_deref(), Some("5"));
    // NOT_FOUND is the client's answer, not a server failure.
    assert_ne!(get.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
    let db = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.parent_span_id == get.span_id)
        .expect("a database span inside the call");
    assert_eq!(db.name, "get_products");
    assert_eq!(db.trace_id, get.trace_id);
    assert_eq!(db.kind, SpanKind::Client as i32);
    assert_eq!(attribute(&db.attributes, "db.system").as_deref(), Some("sqlite"));
    assert!(db.start_time_unix_nano >= get.start_time_unix_nano && db.end_time_unix_nano <= get.end_time_unix_nano);

    let (_, by_image) = find(BY_IMAGE);
    assert!(by_image.parent_span_id.is_empty(), "no traceparent: a new trace");
    assert_ne!(hex(&by_image.trace_id), TRACE_ID);
    let (_, embed) = find("embed");
    assert_eq!(embed.parent_span_id, by_image.span_id);
    assert_eq!(attribute(&embed.attributes, "embedder").as_deref(), Some("remote"));
    // The model server was called inside the embed span, in the same trace.
    let sent = model.traceparents.lock().unwrap().clone();
    assert_eq!(sent, vec![format!("00-{}-{}-01", hex(&embed.trace_id), hex(&embed.span_id))]);

    // Background work (the prober's pings, the followers' polls) starts no traces: every span
    // received is a call or inside one.
    for (_, span) in &spans {
        let inside_a_call = spans.iter().any(|(_, parent)| parent.span_id == span.parent_span_id);
        assert!(span.kind == SpanKind::Server as i32 || inside_a_call, "a span outside any call: {span:#?}");
    }

    // The log line of the call carries its trace id.
    soko.stop();
    let lines = soko.lines();
    let line = lines
        .iter()
        .find(|l| l["message"] == "rpc finished" && l["span"]["method"] == GET)
        .unwrap_or_else(|| panic!("no log line for {GET}: {lines:#?}"));
    assert_eq!(line["span"]["trace_id"], TRACE_ID, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_costs_calls_nothing_and_the_spans_it_loses_are_counted() {
    // A collector that takes connections and never answers: each export waits for its time-out.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", stalled.local_addr().unwrap());
    let soko = SokoProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "1000"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
    ])
    .await;
    let mut client = CatalogServiceClient::new(soko.channel().await);
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let started = Instant::now();
        let err = client
            .get_product(pb::GetProductRequest { id: uuid::Uuid::now_v7().to_string(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        slowest = slowest.max(started.elapsed());
    }
    // Far below the export time-out each call would wait if exporting blocked it.
    assert!(slowest < Duration::from_millis(500), "slowest call took {slowest:?}");

    let dropped = |metrics: &str, reason: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("soko_trace_spans_dropped_total") && l.contains(&format!("reason=\"{reason}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let started = Instant::now();
    loop {
        let metrics = soko.metrics().await;
        let (full, failed) = (dropped(&metrics, "queue_full"), dropped(&metrics, "export_failed"));
        if full > 0.0 && failed > 0.0 {
            // The counter exists from the start, at zero.
            let exported = metrics
                .lines()
                .find_map(|l| l.strip_prefix("soko_trace_spans_exported_total "))
                .and_then(|v| v.trim().parse::<f64>().ok());
            assert_eq!(exported, Some(0.0), "nothing reached the collector: {metrics}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "dropped spans not counted: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
