//! Milvus through Soko (issue 14), against a real Milvus (`SOKO_BENCH_MILVUS`, default
//! 127.0.0.1:19530; scripts/test's, or `milvus-server --data DIR` from `pip install milvus==2.3.5`).
//!
//! 1. **Sync throughput**: N products are written with no Milvus configured, then a server with
//!    Milvus starts and drains that backlog from the outbox: events/s = N / time until Milvus
//!    holds all N (its entity count, strongly consistent).
//! 2. **End-to-end lag** at a steady write rate: CreateProduct over gRPC at R per second; for each
//!    write, the time from its acknowledgement until a routed SearchByVector for its own vector
//!    returns it first (polled every 5 ms, so figures carry up to 5 ms of polling).
//! 3. **SearchByVector through Milvus against the local index**, on the same data in the same
//!    run: two servers on one database, one routed to Milvus (`SOKO_VECTOR_BACKEND=milvus`), one
//!    local; queries interleaved between them, one at a time; p50/p99 over gRPC and recall@10
//!    against exact (brute-force) cosine neighbours.
//!
//! Data: `Mixture::embedding_like`, normalised, `SOKO_BENCH_DIM` (default 128) dimensions.
//!
//! ```text
//! cargo bench --bench milvus                               # N=5000, 20 writes/s for 10 s, 300 queries
//! SOKO_BENCH_N=20000 SOKO_BENCH_RATE=50 cargo bench --bench milvus
//! ```

use std::time::{Duration, Instant};

use soko::{
    configuration::Config,
    domain::{
        auth::RequestContext,
        catalog::Catalog,
        product::{ProductInput, ProductStatus, StatusInput},
    },
    milvus::{IndexKind, Milvus, MilvusConfig},
    proto::{
        catalog as cpb,
        soko::search::v1::{SearchByVectorRequest, search_service_client::SearchServiceClient},
    },
    startup::Application,
    vector::{distance::Metric, normalized, synthetic::Mixture},
};
use tonic::transport::Channel;

fn env(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(dir: &std::path::Path, dim: usize, extra: &[(&str, String)]) -> anyhow::Result<Config> {
    let mut vars: Vec<(&str, String)> = vec![
        ("SOKO_DATA_DIR", dir.display().to_string()),
        ("SOKO_GRPC_ADDR", "127.0.0.1:0".into()),
        ("SOKO_OPS_ADDR", "127.0.0.1:0".into()),
        ("SOKO_EMBEDDING_DIM", dim.to_string()),
        ("SOKO_RATE_LIMIT_ENABLED", "false".into()),
        ("SOKO_SEARCH_CACHE_TTL_SECS", "0".into()),
        ("SOKO_SNAPSHOT_INTERVAL_SECS", "0".into()),
        ("SOKO_BACKUP_INTERVAL_SECS", "0".into()),
        ("SOKO_PRODUCT_CACHE_ENTRIES", "0".into()),
        ("RUST_LOG", "warn".into()),
    ];
    vars.extend(extra.iter().cloned());
    Ok(Config::from_lookup(|key| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()))?)
}

struct Running {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), soko::startup::RunError>>,
}

async fn start(config: Config) -> anyhow::Result<Running> {
    let app = Application::build(config).await?;
    let addr = app.grpc_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    Ok(Running { addr, stop, task })
}

async fn channel(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?.connect().await?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().unwrap()
    );
}

async fn top_ids(client: &mut SearchServiceClient<Channel>, vector: &[f32], k: i32) -> anyhow::Result<Vec<String>> {
    Ok(client
        .search_by_vector(SearchByVectorRequest { vector: vector.to_vec(), top_k: k, filter: None, read_mask: None })
        .await?
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.product_id)
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env("SOKO_BENCH_N", 5_000);
    let dim = env("SOKO_BENCH_DIM", 128);
    let rate = env("SOKO_BENCH_RATE", 20);
    let seconds = env("SOKO_BENCH_SECONDS", 10);
    let queries = env("SOKO_BENCH_QUERIES", 300);
    let address = std::env::var("SOKO_BENCH_MILVUS").unwrap_or_else(|_| "127.0.0.1:19530".into());
    let collection = format!("soko_bench_{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("soko-bench-milvus-{}", std::process::id()));
    let milvus_env = vec![("MILVUS_ADDRESS", address.clone()), ("SOKO_MILVUS_COLLECTION", collection.clone())];
    let milvus = Milvus::new(MilvusConfig {
        address: format!("http://{address}"),
        username: None,
        password: None,
        timeout: Duration::from_secs(30),
        collection: collection.clone(),
        index: IndexKind::Hnsw { m: 32, ef_construction: 200 },
        dim,
        metric: Metric::Cosine,
        route_search: false,
        ef_search: 128,
        nprobe: 16,
        reconcile_every: None,
    })?;

    // 1. The backlog: N products written before Milvus is configured.
    let plain = config(&dir, dim, &[])?;
    let app = Application::build(plain.clone()).await?;
    let catalog = Catalog::new(app.db().clone(), dim);
    drop(app);
    let ctx = RequestContext::system();
    let seller = catalog.create_seller(&ctx, "Bench Seller").await?;
    let mut mixture = Mixture::embedding_like(0x0B11_F0A5, dim);
    let mut vectors: Vec<(String, Vec<f32>)> = Vec::with_capacity(n);
    for i in 0..n {
        let embedding = mixture.sample();
        let input = ProductInput {
            name: format!("Bench product {i}"),
            description: "A product for the Milvus benchmark.".into(),
            price: Some((1_000 + i as i64, "KES".into())),
            category_id: "shoes".into(),
            seller_id: seller.id.to_string(),
            image_urls: vec![],
            embedding: embedding.clone(),
            status: Some(StatusInput::Known(ProductStatus::Active)),
        };
        let product = catalog.create_product(&ctx, input).await?;
        vectors.push((product.id.to_string(), normalized(&embedding).expect("non-zero")));
    }
    println!("data: {n} products × {dim}-d (Mixture::embedding_like), collection {collection}");
    let started = Instant::now();
    let routed =
        start(config(&dir, dim, &[milvus_env.clone(), vec![("SOKO_VECTOR_BACKEND", "milvus".into())]].concat())?)
            .await?;
    loop {
        if milvus.count().await.unwrap_or(0) >= n as i64 {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the backlog did not drain in 10 minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = started.elapsed().as_secs_f64();
    println!(
        "sync throughput: {n} events drained in {drained:.2} s (start-up and collection creation included) = {:.0} events/s",
        n as f64 / drained
    );

    // 2. End-to-end lag at a steady write rate.
    let routed_channel = channel(routed.addr).await?;
    let token = {
        let accounts = soko::startup::accounts(
            &plain,
            &soko::store::Db::connect(
                &plain.database,
                &soko::store::PoolSettings { max_size: 1, checkout_timeout: Duration::from_secs(5) },
            )?,
        );
        let _ =
            accounts.create_user("bench@soko.test", "a benchmark passphrase", soko::domain::auth::Role::Admin).await;
        soko::proto::soko::auth::v1::auth_service_client::AuthServiceClient::new(routed_channel.clone())
            .login(soko::proto::soko::auth::v1::LoginRequest {
                email: "bench@soko.test".into(),
                password: "a benchmark passphrase".into(),
            })
            .await?
            .into_inner()
            .tokens
            .expect("tokens")
            .access_token
    };
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut writer = cpb::catalog_service_client::CatalogServiceClient::with_interceptor(
        routed_channel.clone(),
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        },
    );
    let mut search = SearchServiceClient::new(routed_channel.clone());
    until_search_serves(&mut search, dim).await?;
    let mut lags = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let begun = Instant::now();
    for i in 0..rate * seconds {
        let due = begun + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let embedding = mixture.sample();
        let created = writer
            .create_product(cpb::CreateProductRequest {
                product: Some(cpb::Product {
                    name: format!("Lag probe {i}"),
                    description: "Written at a steady rate.".into(),
                    price: Some(cpb::Money { amount_minor: 500, currency_code: "KES".into() }),
                    category_id: "shoes".into(),
                    seller_id: seller.id.to_string(),
                    embedding: embedding.clone(),
                    status: cpb::ProductStatus::Active.into(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .product
            .expect("the created product");
        let acked = Instant::now();
        // The probe's own vector: visible once it is its own nearest neighbour.
        while top_ids(&mut search, &embedding, 1).await?.first() != Some(&created.id) {
            anyhow::ensure!(acked.elapsed() < Duration::from_secs(30), "write {i} never became visible");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        lags.push(acked.elapsed().as_secs_f64() * 1000.0);
        vectors.push((created.id, normalized(&embedding).expect("non-zero")));
    }
    summary(&format!("end-to-end lag at {rate} writes/s (ack → first in routed SearchByVector)"), lags);

    // 3. Routed against local, interleaved, on the same data.
    let local = start(config(&dir, dim, &[])?).await?;
    let mut local_search = SearchServiceClient::new(channel(local.addr).await?);
    until_search_serves(&mut local_search, dim).await?;
    // Both must hold everything written so far before they are compared.
    let count = vectors.len();
    let probe = vectors[count - 1].1.clone();
    for _ in 0..600 {
        if top_ids(&mut local_search, &probe, 1).await?.first() == Some(&vectors[count - 1].0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut routed_ms, mut local_ms) = (Vec::new(), Vec::new());
    let (mut routed_hits, mut local_hits) = (0usize, 0usize);
    let mut queries_mix = Mixture::embedding_like(0x0B11_F0A5, dim);
    // The same clusters as the data, new points: queries near, not on, the data.
    for _ in 0..n {
        queries_mix.sample();
    }
    for q in 0..queries {
        let query = queries_mix.sample();
        let unit = normalized(&query).expect("non-zero");
        let mut exact: Vec<(f32, &str)> =
            vectors.iter().map(|(id, v)| (v.iter().zip(&unit).map(|(a, b)| a * b).sum::<f32>(), id.as_str())).collect();
        exact.select_nth_unstable_by(10, |a, b| b.0.total_cmp(&a.0));
        let truth: std::collections::HashSet<&str> = exact[..10].iter().map(|(_, id)| *id).collect();
        // Alternate which goes first, so neither always meets a warm cache or a cold one.
        for turn in 0..2 {
            let use_routed = (q + turn) % 2 == 0;
            let client = if use_routed { &mut search } else { &mut local_search };
            let t = Instant::now();
            let ids = top_ids(client, &query, 10).await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let hits = ids.iter().filter(|id| truth.contains(id.as_str())).count();
            if use_routed {
                routed_ms.push(ms);
                routed_hits += hits;
            } else {
                local_ms.push(ms);
                local_hits += hits;
            }
        }
    }
    println!(
        "recall@10 against exact cosine over all {} products, {queries} queries: milvus {:.4}, local {:.4}",
        vectors.len(),
        routed_hits as f64 / (queries * 10) as f64,
        local_hits as f64 / (queries * 10) as f64
    );
    summary("SearchByVector through Milvus", routed_ms);
    summary("SearchByVector, local index", local_ms);

    for server in [routed, local] {
        let _ = server.stop.send(());
        let _ = server.task.await;
    }
    milvus.drop_collection().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Waits until the server's search index has caught up (it answers UNAVAILABLE until then).
async fn until_search_serves(client: &mut SearchServiceClient<Channel>, dim: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    while let Err(e) = top_ids(client, &vec![1.0; dim], 1).await {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "search never served: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
