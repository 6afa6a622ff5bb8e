//! A database that goes away mid-test: calls answer UNAVAILABLE quickly (no 30 s pool waits),
//! readiness reports it, and the service recovers by itself when the database returns.
//!
//! The database is "stopped" by a proxy that drops every connection and refuses new ones, which
//! is what clients of a stopped server see, without stopping the machine's shared server.
//! SQLite is embedded in the process, so it has no server to stop; its lock contention is
//! covered by the shutdown tests.

use crate::common;

use std::time::{Duration, Instant};

use common::{Backend, TestDatabase, http, product, proxy::Proxy, spawn_on, until_writable};
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
        let get = client
            .get_product(pb::GetProductRequest { id: existing.id.clone(), ..Default::default() })
            .await
            .unwrap_err();
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
        match client
            .get_product(pb::GetProductRequest { id: existing.id.clone(), read_mask: common::every_field() })
            .await
        {
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
    // Writes resume once the prober has seen the database answer (automatic read-only ends).
    until_writable(&app, &seller.id, true, Duration::from_secs(10)).await;
    assert_eq!(http::request(app.ops_addr, "GET", "/health/ready", &[], b"").await.status, 200);
    // The failed create during the outage wrote nothing.
    assert_eq!(app.db.count_products().await.unwrap(), 2);
}

/// The incident plan's "database failed → read-only": with the database gone, the prober opens
/// the database's breaker and every write is refused at once as READ_ONLY_MODE (cause
/// `database_unavailable`), search keeps answering from the index, health says so; when the
/// database returns, writes resume by themselves. Prints both transition times.
async fn a_dead_database_turns_on_read_only_mode_by_itself_and_its_return_ends_it(backend: Backend) {
    use soko::proto::soko::{
        admin::v1 as admin_pb,
        search::v1::{SearchProductsRequest, search_service_client::SearchServiceClient},
    };
    use tonic_types::StatusExt;

    let database = TestDatabase::create(backend).await;
    let proxy = Proxy::start(database.server_addr()).await;
    let app = spawn_on(&database.url_via(proxy.addr), &[]).await;
    let seller = app.seller("Read-only Shop").await;
    app.create(product(&seller.id, "Findable during the outage", "shoes", 100)).await;
    let mut search = SearchServiceClient::new(app.channel.clone());
    let query = SearchProductsRequest { query: "findable".into(), ..Default::default() };
    let started = Instant::now();
    while search.search_products(query.clone()).await.unwrap().into_inner().results.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5), "never indexed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The admin's session is known before the outage, as a live operator's would be.
    let mut admin = app.admin_as(Some(&app.admin_token));
    admin.get_read_only_mode(admin_pb::GetReadOnlyModeRequest {}).await.expect("before");

    proxy.down().await;
    let died = Instant::now();
    let to_read_only = loop {
        let result = app
            .catalog
            .clone()
            .create_product(pb::CreateProductRequest { product: Some(product(&seller.id, "Lost?", "shoes", 1)) })
            .await;
        let status = result.expect_err("no write succeeds while the database is gone");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let info = status.get_details_error_info().expect("ErrorInfo");
        if info.reason == "READ_ONLY_MODE" {
            assert_eq!(info.metadata.get("cause").map(String::as_str), Some("database_unavailable"));
            break died.elapsed();
        }
        assert_eq!(info.reason, "STORAGE_UNAVAILABLE", "before the prober notices");
        assert!(died.elapsed() < Duration::from_secs(5), "read-only mode did not begin within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("{}: database gone → automatic read-only mode in {to_read_only:?}", backend.name());
    // Refused at once now, not after a pool checkout.
    let started = Instant::now();
    let refused = app
        .catalog
        .clone()
        .create_product(pb::CreateProductRequest { product: Some(product(&seller.id, "Lost?", "shoes", 1)) })
        .await
        .unwrap_err();
    assert_eq!(refused.get_details_error_info().unwrap().reason, "READ_ONLY_MODE");
    assert!(started.elapsed() < Duration::from_millis(200), "took {:?}", started.elapsed());
    let state = admin.get_read_only_mode(admin_pb::GetReadOnlyModeRequest {}).await.unwrap().into_inner();
    let state = state.read_only_mode.unwrap();
    assert!(!state.enabled && state.effective && state.reason.starts_with("automatic"), "{state:?}");
    let found = search.search_products(query.clone()).await.expect("search works without the database");
    assert_eq!(found.into_inner().results.len(), 1);
    let ready = http::request(app.ops_addr, "GET", "/health/ready", &[], b"").await;
    let body: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_ne!(body["checks"]["database"]["circuit"], "closed", "{body}");

    proxy.up();
    let to_writable = until_writable(&app, &seller.id, true, Duration::from_secs(10)).await;
    eprintln!("{}: database back → writable in {to_writable:?}", backend.name());
    let state = admin.get_read_only_mode(admin_pb::GetReadOnlyModeRequest {}).await.unwrap().into_inner();
    assert!(!state.read_only_mode.unwrap().effective);
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn database_outage_answers_unavailable_fast_and_recovers() {
        if super::Backend::Postgres.enabled() {
            super::database_outage_answers_unavailable_fast_and_recovers(super::Backend::Postgres).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_database_turns_on_read_only_mode_by_itself_and_its_return_ends_it() {
        if super::Backend::Postgres.enabled() {
            super::a_dead_database_turns_on_read_only_mode_by_itself_and_its_return_ends_it(super::Backend::Postgres)
                .await
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_database_turns_on_read_only_mode_by_itself_and_its_return_ends_it() {
        if super::Backend::Mysql.enabled() {
            super::a_dead_database_turns_on_read_only_mode_by_itself_and_its_return_ends_it(super::Backend::Mysql).await
        }
    }
}
