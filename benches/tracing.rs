//! What tracing costs per call: the release server (`soko serve --demo`, SQLite, JSON logs at
//! `info` as in production) answering GetProduct, one database read, with trace export
//! - **off**: no OTLP endpoint;
//! - **on**: every call traced (a server span and its database span) and exported to a real
//!   OTLP/gRPC trace service run by this bench;
//! - **10%**: `OTEL_TRACES_SAMPLER=traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.1`.
//!
//! The variants are interleaved (off, on, 10%, off, …) in one run, because these machines are
//! noisy, and compared as ratios to `off` within each round. The server runs on core 0
//! (taskset), the load and the trace service on core 1. Load: closed loop, 64 calls in flight
//! over 8 HTTP/2 connections. Every answer is checked; errors are counted, not just HTTP status.
//!
//! ```text
//! cargo bench --bench tracing                    # 6 rounds of 20 000 calls per variant
//! SOKO_BENCH_ROUNDS=3 SOKO_BENCH_CALLS=10000 SOKO_BENCH_VARIANTS=off,on cargo bench --bench tracing
//! ```

#[path = "support/soko.rs"]
mod support;

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use soko::proto::catalog::{self as pb, catalog_service_client::CatalogServiceClient};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, transport::Channel};

const CONNECTIONS: usize = 8;
const IN_FLIGHT: usize = 64;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Counts the spans it receives.
#[derive(Clone, Default)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans: usize =
            request.into_inner().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

struct Server {
    child: Child,
    dir: std::path::PathBuf,
    grpc: String,
    ops: String,
}

impl Server {
    fn start(variant: &str, collector: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("soko_bench_tracing_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("server.log");
        let mut command = Command::new("taskset");
        command
            .args(["-c", "0", env!("CARGO_BIN_EXE_soko"), "serve", "--demo"])
            .env_clear()
            .env("SOKO_GRPC_ADDR", "127.0.0.1:0")
            .env("SOKO_OPS_ADDR", "127.0.0.1:0")
            .env("SOKO_DATA_DIR", &dir)
            .env("SOKO_EMBEDDING_DIM", "8")
            .env("SOKO_LOG_FORMAT", "json")
            .env("RUST_LOG", std::env::var("SOKO_BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()))
            // The quotas would refuse a load generator on one address; this measures tracing.
            .env("SOKO_RATE_LIMIT_ENABLED", "false")
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::null());
        match variant {
            "off" => {}
            "on" => {
                command.env("OTEL_EXPORTER_OTLP_ENDPOINT", collector);
            }
            "10%" => {
                command
                    .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
                    .env("OTEL_TRACES_SAMPLER", "traceidratio")
                    .env("OTEL_TRACES_SAMPLER_ARG", "0.1");
            }
            other => anyhow::bail!("unknown variant {other}"),
        }
        let child = command.spawn()?;
        let (grpc, ops) = support::wait_until_serving(&log, Duration::from_secs(30))?;
        Ok(Self { child, dir, grpc, ops })
    }

    /// The value of one counter line of `/metrics` (0 when absent).
    async fn counter(&self, prefix: &str) -> anyhow::Result<f64> {
        Ok(support::metrics(&self.ops)
            .await?
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |a, b| a + b))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Run {
    calls_per_second: f64,
    errors: usize,
    p50_ms: f64,
    p99_ms: f64,
}

/// `calls` GetProduct calls, `IN_FLIGHT` at a time over `CONNECTIONS` connections.
async fn load(addr: &str, calls: usize) -> anyhow::Result<Run> {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
    }
    let listed = CatalogServiceClient::new(channels[0].clone())
        .list_products(pb::ListProductsRequest { page_size: 10, ..Default::default() })
        .await?
        .into_inner();
    let id = listed.products.first().ok_or_else(|| anyhow::anyhow!("no demo products"))?.id.clone();
    let per_task = calls / IN_FLIGHT;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..IN_FLIGHT {
        let mut client = CatalogServiceClient::new(channels[t % CONNECTIONS].clone());
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            let mut errors = 0;
            for _ in 0..per_task {
                let call = Instant::now();
                match client.get_product(pb::GetProductRequest { id: id.clone(), ..Default::default() }).await {
                    Ok(response) if response.get_ref().product.as_ref().is_some_and(|p| p.id == id) => {}
                    _ => errors += 1,
                }
                latencies.push(call.elapsed());
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3;
    Ok(Run { calls_per_second: latencies.len() as f64 / elapsed, errors, p50_ms: at(0.5), p99_ms: at(0.99) })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds = env("SOKO_BENCH_ROUNDS", 6);
    let calls = env("SOKO_BENCH_CALLS", 20_000);
    // This process (load and trace service) on core 1, the server on core 0.
    let _ = Command::new("taskset").args(["-a", "-cp", "1", &std::process::id().to_string()]).output();

    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let collector = format!("http://{}", listener.local_addr()?);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let chosen = std::env::var("SOKO_BENCH_VARIANTS").unwrap_or_else(|_| "off,on,10%".into());
    let variants: Vec<&str> = chosen.split(',').collect();
    let mut throughput: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    println!(
        "{rounds} rounds of {calls} GetProduct calls per variant, {IN_FLIGHT} in flight over {CONNECTIONS} connections"
    );
    println!("round variant   calls/s  p50 ms  p99 ms errors  exported  received  dropped");
    for round in 1..=rounds {
        for (v, variant) in variants.iter().enumerate() {
            let before = sink.0.load(Ordering::Relaxed);
            let server = Server::start(variant, &collector)?;
            // Warm-up: connections, the SQLite page cache, the allocator.
            load(&server.grpc, calls / 10).await?;
            let run = load(&server.grpc, calls).await?;
            // Let the last batch leave (the default schedule delay is 5 s).
            if *variant != "off" {
                tokio::time::sleep(Duration::from_millis(5_500)).await;
            }
            // Over the server's life (warm-up included): what it says it sent and lost, and what
            // the collector got.
            let received = sink.0.load(Ordering::Relaxed) - before;
            let exported = server.counter("soko_trace_spans_exported_total").await?;
            let dropped = server.counter("soko_trace_spans_dropped_total").await?;
            println!(
                "{round:>5} {variant:<7} {:>9.0} {:>7.2} {:>7.2} {:>6} {:>9} {:>9} {:>8}",
                run.calls_per_second, run.p50_ms, run.p99_ms, run.errors, exported, received, dropped
            );
            throughput[v].push(run.calls_per_second);
        }
    }
    println!("\nmean ratio of calls/s to off, per round:");
    for (v, variant) in variants.iter().enumerate() {
        let ratios: Vec<f64> = throughput[v].iter().zip(&throughput[0]).map(|(x, off)| x / off).collect();
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!("{variant:<7} {mean:.3}  ({})", shown.join(" · "));
    }
    Ok(())
}
