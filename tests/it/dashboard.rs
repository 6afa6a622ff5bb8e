//! The Grafana dashboard (deploy/grafana/soko-dashboard.json) queries only metrics that a running
//! Soko exports, and only recording rules that deploy/prometheus defines (issue 22): the real
//! binary serves a short load, with the suite's Milvus behind it, then its `/metrics` is
//! scraped and compared.

use std::collections::BTreeSet;

use tonic::Request;

use crate::common::process::SokoProcess;
use soko::proto::{
    catalog::{self as pb, catalog_service_client::CatalogServiceClient},
    soko::{
        auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
        search::v1::{SearchProductsRequest, search_service_client::SearchServiceClient},
    },
};

/// Metric names in PromQL expressions: `soko_…` series and `soko:…` recording rules.
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("soko") {
        let start = i + at;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(expr.len(), |n| start + n);
        let name = &expr[start..end];
        if boundary && (name.starts_with("soko_") || name.starts_with("soko:")) {
            names.push(name.to_owned());
        }
        i = end.max(start + 4);
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/soko-dashboard.json").unwrap()).unwrap();
    let mut queried = BTreeSet::new();
    let mut panels = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queried.extend(names_in(target["expr"].as_str().unwrap()));
        }
        panels += usize::from(panel["type"] == "timeseries");
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        queried.extend(variable["query"].as_str().map(names_in).unwrap_or_default());
    }
    assert!(panels >= 15 && queried.len() >= 20, "{panels} panels query {queried:?}");

    // A short load that touches every part the dashboard shows: calls of each outcome, the
    // caches, a login (admission), Redis failing (breaker, fallbacks), Sentry and the Milvus
    // sync. Without a Milvus (outside CI) its panels cannot be checked.
    let milvus = crate::milvus::milvus_address();
    if milvus.is_none() {
        queried.retain(|name| !name.starts_with("soko_milvus_"));
    }
    let collection = crate::milvus::collection_name();
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dsn = format!("http://key@{}/1", sink.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = sink.accept().await {
            let mut buf = [0u8; 65536];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        }
    });
    let mut env =
        vec![("SENTRY_DSN", dsn.as_str()), ("REDIS_URL", "redis://127.0.0.1:1"), ("SOKO_SNAPSHOT_INTERVAL_SECS", "1")];
    if let Some(address) = &milvus {
        env.extend([("MILVUS_ADDRESS", address.as_str()), ("SOKO_MILVUS_COLLECTION", collection.as_str())]);
    }
    let soko = SokoProcess::start(&env).await;
    let channel = soko.channel().await;
    let tokens = AuthServiceClient::new(channel.clone())
        .register(auth_pb::RegisterRequest {
            email: "dash@example.com".into(),
            password: "password-123".into(),
            role: auth_pb::Role::Seller.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let mut catalog = CatalogServiceClient::new(channel.clone());
    fn with_token<T>(token: &str, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }
    let authed = |m| with_token(&tokens.access_token, m);
    let seller = catalog
        .create_seller(authed(pb::CreateSellerRequest { display_name: "Dash".into() }))
        .await
        .unwrap()
        .into_inner()
        .seller
        .unwrap();
    let mut product = crate::common::product(&seller.id, "Dashboard lamp", "shoes", 1200);
    product.embedding = vec![0.5; 8];
    let created = catalog
        .create_product(with_token(&tokens.access_token, pb::CreateProductRequest { product: Some(product) }))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    for _ in 0..3 {
        let get = pb::GetProductRequest { id: created.id.clone(), ..Default::default() };
        catalog.get_product(get).await.unwrap();
    }
    let _ = catalog.get_product(pb::GetProductRequest { id: "bad".into(), ..Default::default() }).await;
    for _ in 0..2 {
        let query = SearchProductsRequest { query: "dashboard".into(), ..Default::default() };
        SearchServiceClient::new(channel.clone()).search_products(query).await.unwrap();
    }
    // The snapshot writer and the pool sampler run every second or so.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    let exposition = soko.metrics().await;
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let rules = std::fs::read_to_string("deploy/prometheus/soko-rules.yml").unwrap();
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| {
            if name.starts_with("soko:") {
                return !rules.contains(&format!("record: {name}"));
            }
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| exported.contains(*base))
                .unwrap_or(name);
            !exported.contains(family)
        })
        .collect();
    assert!(missing.is_empty(), "the dashboard queries metrics Soko does not export: {missing:?}\n{exposition}");
    if let Some(address) = &milvus {
        let dim = 8;
        crate::milvus::milvus_client(address, &collection, dim).drop_collection().await.expect("drop the collection");
    }
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        names_in("sum(rate(soko_a_total{x=\"y\"}[5m])) / soko:b:rate5m + time() - soko_c + mysoko_d"),
        ["soko_a_total", "soko:b:rate5m", "soko_c"]
    );
}

const BLACKBOX: &str = "/usr/bin/prometheus-blackbox-exporter";

/// The uptime check of deploy/blackbox/blackbox.yml, run by the real blackbox exporter against
/// the real binary: both modules succeed while Soko serves and fail once it has stopped.
#[tokio::test]
async fn the_uptime_check_sees_a_replica_serve_and_stop() {
    if !crate::common::tool_ready(
        std::path::Path::new(BLACKBOX).exists(),
        &format!("{BLACKBOX} (Debian package prometheus-blackbox-exporter; scripts/test installs it)"),
    ) {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut exporter = std::process::Command::new(BLACKBOX)
        .args(["--config.file=deploy/blackbox/blackbox.yml", &format!("--web.listen-address=127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let exporter_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut soko = SokoProcess::start(&[]).await;
    let probe = |module: &'static str, target: String| async move {
        let started = std::time::Instant::now();
        loop {
            if tokio::net::TcpStream::connect(exporter_addr).await.is_ok() {
                let path = format!("/probe?module={module}&target={target}");
                let response = crate::common::http::request(exporter_addr, "GET", &path, &[], b"").await;
                let body = String::from_utf8_lossy(&response.body).to_string();
                if let Some(line) = body.lines().find(|l| l.starts_with("probe_success ")) {
                    return line.trim_start_matches("probe_success ").trim() == "1";
                }
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(20), "the blackbox exporter never answered");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let (grpc, ready) = (soko.grpc.to_string(), format!("http://{}/health/ready", soko.ops));
    assert!(probe("soko_grpc_health", grpc.clone()).await, "the gRPC health check of a serving Soko");
    assert!(probe("soko_ready", ready.clone()).await, "the readiness check of a serving Soko");
    soko.stop();
    assert!(!probe("soko_grpc_health", grpc).await, "the gRPC health check of a stopped Soko");
    assert!(!probe("soko_ready", ready).await, "the readiness check of a stopped Soko");
    let _ = exporter.kill();
    let _ = exporter.wait();
}
