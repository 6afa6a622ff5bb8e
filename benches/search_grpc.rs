//! SearchByVector over real gRPC: the release server on the embedded default (SQLite), seeded
//! with embedding-like products, and 100 concurrent clients (one HTTP/2 connection each) sending
//! different query vectors. Reports throughput and the latency distribution clients see.
//!
//! ```text
//! cargo bench --bench search_grpc                       # 20k products × 768-d, 100 clients
//! SOKO_BENCH_N=50000 SOKO_BENCH_CLIENTS=100 cargo bench --bench search_grpc
//! ```
//!
//! Server and clients share the machine's cores, so the figure includes the clients' own cost.
//! The result cache is switched off: every call walks the index.

use std::time::{Duration, Instant};

use soko::{
    configuration::Config,
    domain::{
        auth::RequestContext,
        catalog::Catalog,
        product::{ProductInput, ProductStatus, StatusInput},
    },
    proto::soko::search::v1::{SearchByVectorRequest, search_service_client::SearchServiceClient},
    search::synthetic::Mixture,
    startup::Application,
};
use tonic::transport::Channel;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env("SOKO_BENCH_N", 20_000);
    let clients = env("SOKO_BENCH_CLIENTS", 100);
    let calls = env("SOKO_BENCH_CALLS", 20_000);
    let dim = 768;
    let dir = std::env::temp_dir().join(format!("soko-bench-grpc-{}", std::process::id()));
    let mut vars: Vec<(&str, String)> = vec![
        ("SOKO_DATA_DIR", dir.display().to_string()),
        ("SOKO_GRPC_ADDR", "127.0.0.1:0".into()),
        ("SOKO_OPS_ADDR", "127.0.0.1:0".into()),
        ("SOKO_EMBEDDING_DIM", dim.to_string()),
        ("SOKO_RATE_LIMIT_ENABLED", "false".into()),
        ("SOKO_SEARCH_CACHE_TTL_SECS", "0".into()),
        ("SOKO_SNAPSHOT_INTERVAL_SECS", "0".into()),
        ("SOKO_MAX_CONCURRENT_REQUESTS", "10000".into()),
        ("RUST_LOG", "warn".into()),
    ];
    // To measure what a cheaper walk buys over gRPC: SOKO_HNSW_EF_SEARCH=32 cargo bench …
    if let Ok(ef) = std::env::var("SOKO_HNSW_EF_SEARCH") {
        vars.push(("SOKO_HNSW_EF_SEARCH", ef));
    }
    let config = Config::from_lookup(|key| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()))?;
    let app = Application::build(config).await?;
    let grpc_addr = app.grpc_addr();

    let mut mixture = Mixture::embedding_like(0x005E_ED0F_50C0, dim);
    let catalog = Catalog::new(app.db().clone(), dim);
    let ctx = RequestContext::system();
    let seller = catalog.create_seller(&ctx, "Bench Seller").await?;
    let started = Instant::now();
    for i in 0..n {
        let input = ProductInput {
            name: format!("Bench product {i}"),
            description: "A product for the search benchmark.".into(),
            price: Some((1_000 + i as i64, "KES".into())),
            category_id: "shoes".into(),
            seller_id: seller.id.to_string(),
            image_urls: vec![],
            embedding: mixture.sample(),
            status: Some(StatusInput::Known(ProductStatus::Active)),
        };
        catalog.create_product(&ctx, input).await?;
    }
    println!("seeded {n} products in {:.1} s", started.elapsed().as_secs_f64());

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{grpc_addr}"))?.connect().await?;
    let probe = SearchByVectorRequest { vector: mixture.sample(), top_k: 10, ..Default::default() };
    let started = Instant::now();
    loop {
        match SearchServiceClient::new(channel.clone()).search_by_vector(probe.clone()).await {
            Ok(response) if response.get_ref().results.len() == 10 => break,
            _ if started.elapsed() < Duration::from_secs(600) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => anyhow::bail!("search never became ready: {other:?}"),
        }
    }
    println!("index caught up {:.1} s after start", started.elapsed().as_secs_f64());

    let queries: Vec<Vec<f32>> = (0..1_000).map(|_| mixture.sample()).collect();
    let queries = std::sync::Arc::new(queries);
    let per_client = calls / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))?.connect().await?;
        let queries = queries.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = SearchServiceClient::new(channel);
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let vector = queries[(c * per_client + i) % queries.len()].clone();
                let t = Instant::now();
                let response =
                    client.search_by_vector(SearchByVectorRequest { vector, top_k: 10, ..Default::default() }).await;
                latencies.push(t.elapsed());
                anyhow::ensure!(response.is_ok_and(|r| r.get_ref().results.len() == 10), "a call failed");
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "SearchByVector over gRPC: {} products, {clients} clients, {} calls: {:.0} calls/s, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        n,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
