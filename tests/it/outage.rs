//! A database that goes away mid-test: calls answer UNAVAILABLE quickly (no 30 s pool waits),
//! readiness reports it, and the service recovers by itself when the database returns.
//!
//! The database is "stopped" by a proxy that drops every connection and refuses new ones, which
//! is what clients of a stopped server see, without stopping the machine's shared server.
//! SQLite is embedded in the process, so it has no server to stop; its lock contention is
//! covered by the shutdown tests.

use crate::common;

use std::time::{Duration, Instant};

use common::{Backend, TestDatabase, http, product, proxy::Proxy, spawn_on};
use soko::proto::catalog as pb;
use tonic::Code;

async fn database_outage_answers_unavailable_fast_and_recovers(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let proxy = Proxy::start(database.server_addr()).await;
    let app = spawn_on(&database.url_via(proxy.addr), &[]).await;
    let seller = app.seller("Outage Shop").await;
    let existing = app.create(product(&seller.id, "Survivor", "shoes", 100)).await;
    let mut client = app.catalog.clone();

    proxy.down().await;
    for round in 0..3 {
        let started = Instant::now();
        let get = client.get_product(pb::GetProductRequest { id: existing.id.clone() }).await.unwrap_err();
        let list = client.list_products(pb::ListProductsRequest::default()).await.unwrap_err();
        let create = client
            .create_product(pb::CreateProductRequest { product: Some(product(&seller.id, "Lost?", "shoes", 100)) })
            .await
            .unwrap_err();
        let took = started.elapsed();
        for err in [&get, &list, &create] {
            assert_eq!(err.code(), Code::Unavailable, "round {round}: {err:?}");
            assert!(!err.message().to_lowercase().contains("connection refused"), "no driver text: {}", err.message());
        }
        assert!(took < Duration::from_secs(3), "three calls took {took:?}");
        assert!(took / 3 < Duration::from_secs(1));
    }
    let ready = http::request(app.ops_addr, "GET", "/health/ready", &[], b"").await;
    assert_eq!(ready.status, 503);
    let body: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(body["checks"]["database"]["ok"], false);
    // Liveness is not readiness: the process is fine, so it must not be restarted.
    assert_eq!(http::request(app.ops_addr, "GET", "/health", &[], b"").await.status, 200);

    proxy.up();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get_product(pb::GetProductRequest { id: existing.id.clone() }).await {
            Ok(found) => {
                assert_eq!(found.into_inner().product.unwrap(), existing);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.code(), Code::Unavailable);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("did not recover within 10 s: {e:?}"),
        }
    }
    app.create(product(&seller.id, "After the outage", "shoes", 100)).await;
    assert_eq!(http::request(app.ops_addr, "GET", "/health/ready", &[], b"").await.status, 200);
    // The failed create during the outage wrote nothing.
    assert_eq!(app.db.count_products().await.unwrap(), 2);
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn database_outage_answers_unavailable_fast_and_recovers() {
        if super::Backend::Postgres.enabled() {
            super::database_outage_answers_unavailable_fast_and_recovers(super::Backend::Postgres).await
        }
    }
}

mod mysql {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn database_outage_answers_unavailable_fast_and_recovers() {
        if super::Backend::Mysql.enabled() {
            super::database_outage_answers_unavailable_fast_and_recovers(super::Backend::Mysql).await
        }
    }
}
