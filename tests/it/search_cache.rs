//! The search result cache: shared by replicas through Redis, never stale after a catalog write,
//! and never in the way when Redis fails — on SQLite, PostgreSQL and MariaDB.
//!
//! Metrics are per process and these tests share one, so the tests that count Redis hits run
//! one at a time (`SERIAL`).

use crate::common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp, http, product, spawn_app_with, spawn_on};
use soko::proto::{
    catalog as pb,
    soko::search::v1::{
        HybridSearchRequest, SearchByVectorRequest, SearchProductsRequest, SearchResult,
        search_service_client::SearchServiceClient,
    },
};

backend_tests!(two_replicas_share_cached_results_through_redis_and_a_write_is_seen_on_both);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn shared_redis_url() -> String {
    std::env::var("SOKO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn query(q: &str) -> SearchProductsRequest {
    SearchProductsRequest { query: q.into(), ..Default::default() }
}

fn names(results: &[SearchResult]) -> Vec<String> {
    results.iter().map(|r| r.product.as_ref().unwrap().name.clone()).collect()
}

fn client(app: &TestApp) -> SearchServiceClient<tonic::transport::Channel> {
    SearchServiceClient::new(app.channel.clone())
}

/// Text-searches `app` until `accept` holds (the index follows the outbox every 50 ms), for at
/// most 5 s; a cached answer that never changes fails here.
async fn search_until(app: &TestApp, q: &str, accept: impl Fn(&[String]) -> bool) -> Vec<String> {
    let started = Instant::now();
    loop {
        let found = match client(app).search_products(query(q)).await {
            Ok(r) => names(&r.into_inner().results),
            Err(e) if e.code() == tonic::Code::Unavailable => vec![],
            Err(e) => panic!("{e:?}"),
        };
        if accept(&found) {
            return found;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "search never showed the expected results: {found:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `soko_search_cache_lookups_total{backend, outcome}` as this process reports it.
async fn lookups(app: &TestApp, backend: &str, outcome: &str) -> f64 {
    let body = http::request(app.ops_addr, "GET", "/metrics", &[], b"").await.body;
    let labels = [format!("backend=\"{backend}\""), format!("outcome=\"{outcome}\"")];
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("soko_search_cache_lookups_total{") && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn readiness(app: &TestApp) -> serde_json::Value {
    serde_json::from_slice(&http::request(app.ops_addr, "GET", "/health/ready", &[], b"").await.body).unwrap()
}

fn near(i: usize) -> Vec<f32> {
    let mut v = vec![0.05; 8];
    v[i] = 1.0;
    v
}

async fn two_replicas_share_cached_results_through_redis_and_a_write_is_seen_on_both(backend: Backend) {
    let _serial = SERIAL.lock().await;
    let (redis, prefix) = (shared_redis_url(), format!("soko-test-{}", uuid::Uuid::new_v4().simple()));
    let vars = [("REDIS_URL", redis.as_str()), ("SOKO_REDIS_KEY_PREFIX", prefix.as_str())];
    let a = spawn_app_with(backend, &vars).await;
    let b = spawn_on(&a.database.as_ref().unwrap().url, &vars).await;
    assert_eq!(readiness(&b).await["checks"]["search_cache"]["backend"], "redis");
    let seller = a.seller("Coast Weavers").await.id;
    let mut wrap = product(&seller, "Kikoi beach wrap", "accessories", 1500);
    wrap.embedding = near(0);
    let wrap = a.create(wrap).await;
    // Both replicas have indexed the write (and so stand at the same outbox position); the
    // query waited with is not the one measured.
    for app in [&a, &b] {
        search_until(app, "kikoi", |n| n.len() == 1).await;
    }

    // Text, vector and hybrid search each: computed on A, then read from Redis on B.
    let text = || query("beach wrap");
    let vector = || SearchByVectorRequest { vector: near(0), top_k: 5, ..Default::default() };
    let hybrid = || HybridSearchRequest { query: "wrap".into(), vector: near(0), top_k: 5, ..Default::default() };
    let before = lookups(&b, "redis", "hit").await;
    let on_a = (
        client(&a).search_products(text()).await.unwrap().into_inner(),
        client(&a).search_by_vector(vector()).await.unwrap().into_inner(),
        client(&a).hybrid_search(hybrid()).await.unwrap().into_inner(),
    );
    assert_eq!(lookups(&b, "redis", "hit").await, before, "A computed these");
    let on_b = (
        client(&b).search_products(text()).await.unwrap().into_inner(),
        client(&b).search_by_vector(vector()).await.unwrap().into_inner(),
        client(&b).hybrid_search(hybrid()).await.unwrap().into_inner(),
    );
    assert_eq!(lookups(&b, "redis", "hit").await, before + 3.0, "B read all three from Redis");
    assert_eq!(on_a, on_b);
    assert_eq!(names(&on_b.0.results), ["Kikoi beach wrap"]);

    // The entries are where the README says, with the TTL.
    let mut conn = redis::Client::open(redis.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}:search:v1:*")).query_async(&mut conn).await.unwrap();
    assert!(keys.len() >= 3, "{keys:?}");
    let ttl_ms: i64 = redis::cmd("PTTL").arg(&keys[0]).query_async(&mut conn).await.unwrap();
    assert!((3_500_000..=3_600_000).contains(&ttl_ms), "PTTL {ttl_ms}");

    // A write through B: both replicas show it at once, however warm their caches are.
    let mut skirt = product(&seller, "Kikoi wrap skirt", "accessories", 2500);
    skirt.embedding = near(0);
    b.create(skirt).await;
    b.catalog
        .clone()
        .update_product(pb::UpdateProductRequest {
            product: Some(pb::Product {
                id: wrap.id.clone(),
                name: "Kikoi beach sarong wrap".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
        })
        .await
        .unwrap();
    for app in [&a, &b] {
        let found =
            search_until(app, "beach wrap", |n| n.len() == 2 && n.contains(&"Kikoi beach sarong wrap".into())).await;
        assert!(found.contains(&"Kikoi wrap skirt".to_string()), "{found:?}");
        let started = Instant::now();
        loop {
            let results = client(app).search_by_vector(vector()).await.unwrap().into_inner().results;
            if results.len() == 2 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "vector search stayed stale: {:?}", names(&results));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap_or(());
}

/// Accepts connections and never answers, like a wedged Redis.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_answer_correctly_and_quickly_when_redis_is_down_or_silent() {
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("redis://{}", listener.local_addr().unwrap())
    };
    let (silent, _server) = silent_server().await;
    for url in [refused, silent] {
        let app =
            spawn_app_with(Backend::Sqlite, &[("REDIS_URL", url.as_str()), ("SOKO_REDIS_TIMEOUT_MS", "50")]).await;
        let seller = app.seller("Offline Goods").await.id;
        app.create(product(&seller, "Sisal basket", "furniture", 800)).await;
        assert_eq!(search_until(&app, "sisal", |n| n.len() == 1).await, ["Sisal basket"], "{url}");
        for _ in 0..5 {
            let started = Instant::now();
            let results = client(&app).search_products(query("sisal basket")).await.unwrap().into_inner().results;
            assert_eq!(names(&results), ["Sisal basket"], "{url}");
            let took = started.elapsed();
            assert!(took < Duration::from_millis(500), "{url}: a search took {took:?}");
        }
        let ready = readiness(&app).await;
        assert_eq!(ready["status"], "ready", "{url}: a failing Redis never makes a replica unready");
        assert_eq!(ready["checks"]["search_cache"]["backend"], "local (redis failing)", "{url}");

        // Writes are still seen: the in-process cache is invalidated as before.
        app.create(product(&seller, "Sisal doormat", "furniture", 600)).await;
        search_until(&app, "sisal", |n| n.len() == 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_ttl_turns_the_cache_off() {
    let app = spawn_app_with(Backend::Sqlite, &[("SOKO_SEARCH_CACHE_TTL_SECS", "0")]).await;
    assert_eq!(readiness(&app).await["checks"]["search_cache"]["backend"], "off");
    let seller = app.seller("Uncached").await.id;
    app.create(product(&seller, "Maasai shuka", "accessories", 1200)).await;
    assert_eq!(search_until(&app, "shuka", |n| n.len() == 1).await, ["Maasai shuka"]);
}
