//! SearchByVector over real gRPC: the release server on the embedded default (SQLite), seeded
//! with embedding-like products, and 100 concurrent clients (one HTTP/2 connection each) sending
//! different query vectors.
//!
//! Three servers answer in the same run, so their figures compare as ratios:
//! - **soko**: the real server, every middleware layer included;
//! - **bare**: a plain tonic server with the same `SearchApi` over its own copy of the index
//!   (fed from the same database), no layers: what the middleware costs;
//! - **floor**: a plain tonic server returning a canned ten-result response without searching:
//!   what gRPC itself (and the clients, which share the cores) costs.
//!
//! Two kinds of load:
//! - closed loop: every client sends its next call as soon as the last returns (saturation;
//!   latency is then ~ clients / throughput by Little's law);
//! - open loop: the clients together send at a fixed rate, and a call's latency counts from when
//!   it was due, so a server falling behind is charged for the queue it causes.
//!
//! ```text
//! cargo bench --bench search_grpc                       # 10k products × 768-d, 100 clients
//! SOKO_BENCH_N=20000 SOKO_BENCH_RATES=500,1000 cargo bench --bench search_grpc
//! ```
//!
//! The result cache is switched off: every call walks the index.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use soko::{
    api::search::SearchApi,
    configuration::Config,
    domain::{
        auth::RequestContext,
        catalog::Catalog,
        product::{ProductInput, ProductStatus, StatusInput},
    },
    proto::soko::search::v1::{
        self as pb,
        search_service_client::SearchServiceClient,
        search_service_server::{SearchService, SearchServiceServer},
    },
    search::{SearchEngine, cache::SearchCache},
    startup::Application,
    vector::synthetic::Mixture,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, transport::Channel};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

/// Answers SearchByVector with the same ten results every time, searching nothing.
struct Canned(pb::SearchByVectorResponse);

#[tonic::async_trait]
impl SearchService for Canned {
    async fn search_products(
        &self,
        _: Request<pb::SearchProductsRequest>,
    ) -> Result<Response<pb::SearchProductsResponse>, Status> {
        Err(Status::unimplemented("floor server"))
    }
    async fn search_by_vector(
        &self,
        request: Request<pb::SearchByVectorRequest>,
    ) -> Result<Response<pb::SearchByVectorResponse>, Status> {
        // Touch the vector so the decode is not the only thing the request is used for.
        let norm: f32 = request.get_ref().vector.iter().map(|x| x * x).sum();
        if !norm.is_finite() {
            return Err(Status::invalid_argument("vector"));
        }
        Ok(Response::new(self.0.clone()))
    }
    async fn search_by_image(
        &self,
        _: Request<pb::SearchByImageRequest>,
    ) -> Result<Response<pb::SearchByImageResponse>, Status> {
        Err(Status::unimplemented("floor server"))
    }
    async fn similar_products(
        &self,
        _: Request<pb::SimilarProductsRequest>,
    ) -> Result<Response<pb::SimilarProductsResponse>, Status> {
        Err(Status::unimplemented("floor server"))
    }
    async fn hybrid_search(
        &self,
        _: Request<pb::HybridSearchRequest>,
    ) -> Result<Response<pb::HybridSearchResponse>, Status> {
        Err(Status::unimplemented("floor server"))
    }
}

/// Serves `service` alone, with no layers, on a free port (with Nagle off, as tonic's own
/// `serve` and Soko's server have it).
async fn serve_bare<S: SearchService>(service: S) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .add_service(SearchServiceServer::new(service))
        .serve_with_incoming(soko::startup::incoming(listener));
    tokio::spawn(server);
    Ok(addr)
}

struct Run {
    calls: usize,
    elapsed: f64,
    latencies: Vec<Duration>,
}

impl Run {
    fn report(mut self, label: &str) -> f64 {
        self.latencies.sort();
        let rate = self.calls as f64 / self.elapsed;
        let l = &self.latencies;
        println!(
            "  {label:<28} {rate:>7.0} calls/s  p50 {:>6.2}  p90 {:>6.2}  p99 {:>6.2}  max {:>6.2} ms",
            percentile(l, 0.5),
            percentile(l, 0.9),
            percentile(l, 0.99),
            l.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
        rate
    }
}

/// `clients` connections to `addr` sending `calls` calls in all: as fast as they can when `rate`
/// is `None`, else together at `rate` calls/s on a fixed schedule (latency counted from the
/// call's due time).
async fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    calls: usize,
    rate: Option<f64>,
    queries: &Arc<Vec<Vec<f32>>>,
) -> anyhow::Result<Run> {
    let per_client = calls / clients;
    let mut channels = Vec::with_capacity(clients);
    for _ in 0..clients {
        channels.push(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
    }
    let started = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for (c, channel) in channels.into_iter().enumerate() {
        let queries = queries.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = SearchServiceClient::new(channel);
            let mut latencies = Vec::with_capacity(per_client);
            tokio::time::sleep_until(started).await;
            for i in 0..per_client {
                let due = match rate {
                    // Client c takes slots c, c + clients, …: the calls are spread evenly.
                    Some(rate) => {
                        let due = started + Duration::from_secs_f64((i * clients + c) as f64 / rate);
                        tokio::time::sleep_until(due).await;
                        due
                    }
                    None => tokio::time::Instant::now(),
                };
                let vector = queries[(c * per_client + i) % queries.len()].clone();
                let response = client
                    .search_by_vector(pb::SearchByVectorRequest { vector, top_k: 10, ..Default::default() })
                    .await;
                latencies.push(due.elapsed());
                anyhow::ensure!(response.is_ok_and(|r| r.get_ref().results.len() == 10), "a call failed");
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Run { calls: latencies.len(), elapsed: started.elapsed().as_secs_f64(), latencies })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env("SOKO_BENCH_N", 10_000);
    let clients = env("SOKO_BENCH_CLIENTS", 100);
    let calls = env("SOKO_BENCH_CALLS", 10_000);
    let rounds = env("SOKO_BENCH_ROUNDS", 2);
    let rates: Vec<f64> = std::env::var("SOKO_BENCH_RATES")
        .unwrap_or_else(|_| "250,500,750,1000,1250".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
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
    let app = Application::build(config.clone()).await?;
    let soko_addr = app.grpc_addr();
    let db = app.db().clone();

    let mut mixture = Mixture::embedding_like(0x005E_ED0F_50C0, dim);
    let catalog = Catalog::new(db.clone(), dim);
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
    // The bare server's own index, fed from the same outbox (no snapshots).
    let engine = SearchEngine::new(db, dim, config.hnsw, None, SearchCache::new(config.search_cache_ttl, None));
    tokio::spawn(engine.clone().follow(std::future::pending()));
    let embedder = soko::embed::from_config(&config.embedder, dim, config.image_embed_max_wait)?;
    let bare_addr = serve_bare(SearchApi::new(engine, embedder)).await?;

    let probe = pb::SearchByVectorRequest { vector: mixture.sample(), top_k: 10, ..Default::default() };
    let started = Instant::now();
    let mut canned = None;
    for addr in [soko_addr, bare_addr] {
        let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
        loop {
            match SearchServiceClient::new(channel.clone()).search_by_vector(probe.clone()).await {
                Ok(response) if response.get_ref().results.len() == 10 => {
                    canned = Some(response.into_inner());
                    break;
                }
                _ if started.elapsed() < Duration::from_secs(600) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => anyhow::bail!("search never became ready on {addr}: {other:?}"),
            }
        }
    }
    println!("both indexes caught up {:.1} s after start", started.elapsed().as_secs_f64());
    let floor_addr = serve_bare(Canned(canned.expect("a probe answered"))).await?;

    let queries: Arc<Vec<Vec<f32>>> = Arc::new((0..1_000).map(|_| mixture.sample()).collect());
    let servers = [("soko", soko_addr), ("bare", bare_addr), ("floor", floor_addr)];
    println!("closed loop: {clients} clients, {calls} calls per run, {rounds} interleaved rounds");
    let mut totals = [0.0; 3];
    for round in 1..=rounds {
        for (i, (name, addr)) in servers.iter().enumerate() {
            totals[i] += load(*addr, clients, calls, None, &queries).await?.report(&format!("{name} (round {round})"));
        }
    }
    println!(
        "  throughput ratios over {rounds} rounds: soko/bare {:.3}, bare/floor {:.3}, soko/floor {:.3}",
        totals[0] / totals[1],
        totals[1] / totals[2],
        totals[0] / totals[2],
    );
    println!("open loop: {clients} clients sending together at a fixed rate, ~5 s per rate");
    for rate in &rates {
        let calls = ((rate * 5.0) as usize).max(clients);
        for (name, addr) in &servers[..2] {
            load(*addr, clients, calls, Some(*rate), &queries).await?.report(&format!("{name} at {rate} calls/s"));
        }
    }
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
